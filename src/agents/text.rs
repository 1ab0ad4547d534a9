//! Text helpers for the local agents: sentence splitting and TextRank sentence ranking
//! (Mihalcea & Tarau, "TextRank: Bringing Order into Texts", 2004, §4).

use std::collections::HashSet;

/// Words too common to say anything about a sentence's topic.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but",
    "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he", "her", "him",
    "his", "i", "if", "in", "into", "is", "it", "its", "just", "me", "my", "no", "not", "of", "on", "or",
    "our", "out", "she", "so", "than", "that", "the", "their", "them", "then", "there", "these", "they",
    "this", "to", "up", "us", "was", "we", "were", "what", "when", "which", "who", "will", "with", "would",
    "you", "your",
];

const ABBREVIATIONS: &[&str] = &[
    "e.g.", "i.e.", "etc.", "mr.", "mrs.", "ms.", "dr.", "prof.", "vs.", "approx.", "no.", "inc.", "ltd.",
    "jan.", "feb.", "mar.", "apr.", "jun.", "jul.", "aug.", "sep.", "sept.", "oct.", "nov.", "dec.", "st.",
    "fig.", "p.s.",
];

/// Splits text into sentences: at `.`, `!`, `?` (not after a known abbreviation or inside a
/// number) followed by whitespace, and at paragraph breaks and list items. Whitespace inside a
/// sentence is collapsed. Empty sentences are dropped.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in blocks(text) {
        let words: Vec<&str> = block.split_whitespace().collect();
        let mut current: Vec<&str> = Vec::new();
        for (i, w) in words.iter().enumerate() {
            current.push(w);
            let ends = w.ends_with(['.', '!', '?']) || w.ends_with(".)") || w.ends_with("?)");
            let abbreviation = ABBREVIATIONS.contains(&w.to_lowercase().as_str())
                || (w.len() == 2 && w.ends_with('.') && w.chars().next().is_some_and(char::is_uppercase));
            let next_starts = words.get(i + 1).is_none_or(|n| {
                n.chars().next().is_some_and(|c| c.is_uppercase() || c.is_ascii_digit() || "\"'(".contains(c))
            });
            if ends && !abbreviation && next_starts {
                out.push(current.join(" "));
                current.clear();
            }
        }
        if !current.is_empty() {
            out.push(current.join(" "));
        }
    }
    out.retain(|s| s.chars().any(char::is_alphanumeric));
    out
}

/// Paragraphs, and single lines that are list items or stand alone (greetings, sign-offs).
fn blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        let list_item = t.starts_with(['-', '*', '•'])
            || t.split_once(['.', ')'])
                .is_some_and(|(n, _)| !n.is_empty() && n.len() <= 2 && n.chars().all(|c| c.is_ascii_digit()));
        let standalone = t.ends_with(',') && t.split_whitespace().count() <= 4;
        if t.is_empty() || list_item {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
            if list_item {
                current.push_str(t.trim_start_matches(['-', '*', '•', ' ']));
            }
            continue;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(t);
        if standalone {
            blocks.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

/// Lower-cased content words of a sentence, with a light plural stem.
pub fn content_words(sentence: &str) -> Vec<String> {
    sentence
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| w.chars().count() > 1 && !STOPWORDS.contains(&w.as_str()))
        .map(|w| {
            if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
                w[..w.len() - 1].to_owned()
            } else {
                w
            }
        })
        .collect()
}

/// TextRank scores, one per sentence, from the graph whose edge weights are the TextRank
/// similarity `|Si ∩ Sj| / (ln|Si| + ln|Sj|)`; damping 0.85, until change < 1e-6 (≤ 100 rounds).
pub fn textrank(sentences: &[String]) -> Vec<f64> {
    let n = sentences.len();
    if n == 0 {
        return Vec::new();
    }
    let words: Vec<HashSet<String>> =
        sentences.iter().map(|s| content_words(s).into_iter().collect()).collect();
    let mut weight = vec![vec![0.0f64; n]; n];
    for i in 0..n {
        for j in (i + 1)..n {
            let common = words[i].intersection(&words[j]).count() as f64;
            if common == 0.0 {
                continue;
            }
            let norm = (words[i].len().max(2) as f64).ln() + (words[j].len().max(2) as f64).ln();
            weight[i][j] = common / norm;
            weight[j][i] = weight[i][j];
        }
    }
    let out_sum: Vec<f64> = weight.iter().map(|row| row.iter().sum()).collect();
    let d = 0.85;
    let mut score = vec![1.0f64; n];
    for _ in 0..100 {
        let next: Vec<f64> = (0..n)
            .map(|i| {
                let inflow: f64 = (0..n)
                    .filter(|&j| out_sum[j] > 0.0 && weight[j][i] > 0.0)
                    .map(|j| weight[j][i] / out_sum[j] * score[j])
                    .sum();
                (1.0 - d) + d * inflow
            })
            .collect();
        let delta: f64 = next.iter().zip(&score).map(|(a, b)| (a - b).abs()).sum();
        score = next;
        if delta < 1e-6 {
            break;
        }
    }
    score
}

/// Indices of the `k` best sentences by score (ties: the earlier sentence), in text order.
pub fn top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// Greetings, thanks and sign-offs: sentences that carry no content for a summary.
pub fn is_pleasantry(sentence: &str) -> bool {
    let lower = sentence.to_lowercase();
    let lower = lower.trim_end_matches(['.', ',', '!']);
    let words = lower.split_whitespace().count();
    const OPENERS: &[&str] = &["hi", "hello", "hey", "dear", "good morning", "good afternoon", "greetings"];
    const CLOSERS: &[&str] = &[
        "thanks",
        "thank you",
        "many thanks",
        "best",
        "best regards",
        "regards",
        "kind regards",
        "cheers",
        "sincerely",
        "all the best",
        "br",
        "thx",
    ];
    (words <= 4 && OPENERS.iter().any(|o| lower.starts_with(o)))
        || (words <= 5 && CLOSERS.iter().any(|c| lower.starts_with(c)))
        || words <= 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sentences_but_not_abbreviations_or_numbers() {
        let s = sentences(
            "Hi Ann,\n\nThe total is 3.5 kg, e.g. about right. Is that OK? Yes!\n- first item\n- second item",
        );
        assert_eq!(
            s,
            vec![
                "Hi Ann,",
                "The total is 3.5 kg, e.g. about right.",
                "Is that OK?",
                "Yes!",
                "first item",
                "second item"
            ]
        );
    }

    #[test]
    fn textrank_prefers_the_sentence_sharing_most_with_the_rest() {
        let s: Vec<String> = [
            "The server migration is planned for next week.",
            "Lunch was nice.",
            "The migration needs a database backup first.",
            "After the migration the server database moves to the new cluster.",
        ]
        .map(String::from)
        .to_vec();
        let scores = textrank(&s);
        let best = top_k(&scores, 1);
        assert_ne!(best, vec![1], "the off-topic sentence must not win: {scores:?}");
        assert!(scores[1] < scores[3]);
    }

    #[test]
    fn top_k_returns_text_order_and_breaks_ties_by_position() {
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0], 2), vec![1, 2]);
        assert_eq!(top_k(&[1.0, 1.0, 1.0], 2), vec![0, 1]);
    }

    #[test]
    fn pleasantries_are_recognized() {
        for p in ["Hi Bob,", "Thanks,", "Best regards", "Cheers!", "Anna"] {
            assert!(is_pleasantry(p), "{p}");
        }
        assert!(!is_pleasantry("Thanks for the report, the numbers look wrong in section 2."));
    }
}
