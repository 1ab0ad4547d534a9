//! The status page in a real browser: Debian's Chromium, headless, driven over the DevTools
//! protocol (chromiumoxide). A task ingested after the page loaded appears without a reload
//! (the page's event stream); with JavaScript disabled the page still shows everything and
//! carries its refresh fallback. A screenshot is written to `target/status-page.png`.
//!
//! Skipped with a notice where `chromium` is not installed; in CI (`CI=true`) that fails.

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::emulation::SetScriptExecutionDisabledParams;
use chromiumoxide::page::ScreenshotParams;
use futures_util::StreamExt;
use support::{Db, TestApp};

/// Debian's chromium, if installed.
fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "chromium must be installed in CI");
        eprintln!("NOTICE: chromium not installed, skipping the browser test");
    }
    found
}

fn mail(i: usize) -> Vec<u8> {
    format!(
        "From: Browser Tester <tester@example.org>\r\nTo: swarm@localhost\r\nSubject: Seen live {i}\r\n\
         Message-ID: <browser-{i}@example.org>\r\nDate: Fri, 20 Nov 2026 09:00:00 +0000\r\n\r\nPlease check item {i}.\r\n"
    )
    .into_bytes()
}

/// Evaluates `js` in `page` until it returns true, for up to `deadline`.
async fn wait_for(page: &chromiumoxide::Page, js: &str, deadline: Duration) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        if let Ok(v) = page.evaluate(js).await
            && v.into_value::<bool>().unwrap_or(false)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_updates_live_and_works_without_javascript() {
    let Some(executable) = chromium() else { return };
    let app = TestApp::spawn(Db::Sqlite, &[]).await;
    let first = app.post_for_task(&mail(1), "msg_w1").await;
    app.wait_finished(first).await;

    let profile = tempfile::tempdir().expect("profile dir");
    let config = BrowserConfig::builder()
        .chrome_executable(executable)
        .no_sandbox()
        .user_data_dir(profile.path())
        .window_size(1280, 1600)
        .args([
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .build()
        .expect("browser config");
    let (mut browser, mut handler) = Browser::launch(config).await.expect("chromium starts");
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });

    // With JavaScript: the page loads, then a new task appears in it without a reload.
    let page = browser.new_page(app.url("/")).await.expect("page opens");
    page.wait_for_navigation().await.expect("loaded");
    assert!(wait_for(&page, "document.title === 'SwarmDirector'", Duration::from_secs(10)).await);
    page.evaluate("window.__loadedOnce = true").await.expect("mark the document");
    let second = app.post_for_task(&mail(2), "msg_w2").await;
    app.wait_finished(second).await;
    let live = format!("!!document.querySelector('#recent a[href=\"/tasks/{second}\"]')");
    assert!(wait_for(&page, &live, Duration::from_secs(15)).await, "task {second} shown without a reload");
    let same_document: bool =
        page.evaluate("window.__loadedOnce === true").await.expect("eval").into_value().expect("bool");
    assert!(same_document, "the page was not reloaded");
    let note: String = page
        .evaluate("document.getElementById('live-note').textContent")
        .await
        .expect("eval")
        .into_value()
        .expect("text");
    assert!(note.starts_with("Live: updated"), "{note}");

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("status-page.png");
    std::fs::create_dir_all(shot.parent().expect("target")).expect("target dir");
    page.save_screenshot(ScreenshotParams::builder().full_page(true).build(), &shot)
        .await
        .expect("screenshot");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot at {}", shot.display());
    println!("screenshot: {}", shot.display());

    // Without JavaScript: everything is on the page, and it refreshes itself.
    let plain = browser.new_page("about:blank").await.expect("second page");
    plain.execute(SetScriptExecutionDisabledParams::new(true)).await.expect("scripts off");
    plain.goto(app.url("/")).await.expect("navigates");
    plain.wait_for_navigation().await.expect("loaded");
    let html = plain.content().await.expect("content");
    assert!(html.contains(&format!("href=\"/tasks/{second}\"")), "both tasks listed without JavaScript");
    assert!(html.contains("http-equiv=\"refresh\""), "the refresh fallback is there");
    assert!(!html.contains("Live: updated"), "no script ran");
    let task = plain.goto(app.url(&format!("/tasks/{second}"))).await.expect("task page");
    task.wait_for_navigation().await.expect("loaded");
    let task_html = task.content().await.expect("content");
    assert!(task_html.contains("id=\"reply-text\""), "the reply as text on the task page");

    browser.close().await.expect("close");
    let _ = browser.wait().await;
    events.abort();
    app.stop().await;
}
