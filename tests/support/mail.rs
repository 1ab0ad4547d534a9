//! Test mail: one builder for the plain-text requests the tests send, so a test names only what
//! it cares about (sender, subject, Message-ID, threading headers).

/// A plain-text RFC 5322 message: `From`, `To`, `Subject`, `Message-ID`, then `headers` in order,
/// a blank line and `body`, all with CRLF line ends.
#[derive(Debug, Clone)]
pub struct Mail<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    /// Without angle brackets.
    pub message_id: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a str,
}

impl Default for Mail<'_> {
    fn default() -> Self {
        Self {
            from: "Ann Example <ann@example.org>",
            to: "swarm@localhost",
            subject: "Request",
            message_id: "request@example.org",
            headers: &[],
            body: "Could you send me the Q3 numbers by Friday?\r\n",
        }
    }
}

impl Mail<'_> {
    pub fn bytes(&self) -> Vec<u8> {
        let mut text = format!(
            "From: {}\r\nTo: {}\r\nSubject: {}\r\nMessage-ID: <{}>\r\n",
            self.from, self.to, self.subject, self.message_id
        );
        for (name, value) in self.headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.push_str(&self.body.replace("\r\n", "\n").replace('\n', "\r\n"));
        text.into_bytes()
    }
}
