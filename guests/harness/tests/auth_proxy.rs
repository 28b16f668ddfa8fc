//! The auth proxy in the harness: no root, no pod; a fake app behind it on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use peapod_guests::AUTH_PROXY;
use peapod_harness::{FakeApp, Running, Sidecar, free_addr, http};

const TOKEN: &str = "tok-3f9c1e0a7b";

struct Setup {
    app: FakeApp,
    listen: String,
    proxy: Running,
    secrets: tempfile::TempDir,
}

fn setup(max_failures: u32) -> Setup {
    let app = FakeApp::start(|r| (200, format!("app: {} {}", r.method, r.path).into_bytes()));
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let listen = free_addr();
    let proxy = Sidecar::new(AUTH_PROXY)
        .env("LISTEN", &listen)
        .env("UPSTREAM", &app.addr().to_string())
        .env("TOKEN_FILE", "/secrets/token")
        .env("ADMIN", &free_addr())
        .env("MAX_FAILURES", &max_failures.to_string())
        .env("TOKEN_RELOAD", "100ms")
        .mount_read_only(secrets.path(), "/secrets")
        .start();
    proxy.wait_for_log("auth-proxy listening", Duration::from_secs(30));
    Setup {
        app,
        listen,
        proxy,
        secrets,
    }
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[test]
fn only_requests_with_the_token_reach_the_app() {
    let s = setup(100);
    let none = http(&s.listen, "GET /kv HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&none), 401, "{none}");
    assert!(none.contains("WWW-Authenticate: Bearer"), "{none}");
    let wrong = http(
        &s.listen,
        "GET /kv HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-3f9c1e0a7c\r\n\r\n",
    );
    assert_eq!(status(&wrong), 401, "{wrong}");
    let basic = http(
        &s.listen,
        &format!("GET /kv HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {TOKEN}\r\n\r\n"),
    );
    assert_eq!(status(&basic), 401, "{basic}");
    assert!(s.app.received().is_empty(), "nothing reached the app");

    let ok = http(
        &s.listen,
        &format!(
            "PUT /kv/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 5\r\n\r\nhello"
        ),
    );
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(ok.ends_with("app: PUT /kv/a"), "{ok}");
    let got = s.app.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"hello");
    assert_eq!(
        got[0].header("authorization"),
        None,
        "the token stays with the proxy"
    );
    assert_eq!(got[0].header("x-forwarded-for"), Some("127.0.0.1"));

    // The token is never logged (nor the wrong one offered); refusals are, with their source.
    let logs = s.proxy.stop().logs;
    assert!(
        !logs.contains(TOKEN) && !logs.contains("tok-3f9c1e0a7c"),
        "{logs}"
    );
    assert!(
        logs.contains("reason=\"wrong token\"") && logs.contains("from=127.0.0.1"),
        "{logs}"
    );
}

#[test]
fn keep_alive_and_chunked_bodies_pass_through() {
    let s = setup(100);
    let mut conn = TcpStream::connect(&s.listen).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Two requests on one connection; the first with a chunked body sent in pieces.
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).unwrap();
    for piece in ["5\r\nhello\r\n", "6\r\n world\r\n", "0\r\n\r\n"] {
        conn.write_all(piece.as_bytes()).unwrap();
        conn.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let first = read_answer(&mut conn);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    conn.write_all(
        format!("GET /two HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let second = read_answer(&mut conn);
    assert!(second.ends_with("app: GET /two"), "{second}");
    let got = s.app.received();
    assert_eq!(got[0].body, b"hello world");
    assert_eq!(got.len(), 2);
}

/// One answer with a Content-Length body, read off a kept-alive connection.
fn read_answer(conn: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut b).unwrap(),
            1,
            "closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(b[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

#[test]
fn failed_attempts_are_rate_limited_per_source() {
    let s = setup(3);
    for _ in 0..3 {
        let a = http(
            &s.listen,
            "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer guess\r\n\r\n",
        );
        assert_eq!(status(&a), 401, "{a}");
    }
    // Even the right token waits out the window now.
    let a = http(
        &s.listen,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
    );
    assert_eq!(status(&a), 429, "{a}");
    assert!(a.contains("Retry-After: 60"), "{a}");
    assert!(s.app.received().is_empty());
}

#[test]
fn smuggling_heads_are_refused() {
    let s = setup(100);
    let a = http(
        &s.listen,
        &format!(
            "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 4\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n"
        ),
    );
    assert_eq!(status(&a), 400, "{a}");
    assert!(s.app.received().is_empty(), "{:?}", s.app.received());
}

#[test]
fn a_missing_token_file_ends_the_proxy_with_its_name() {
    let empty = tempfile::tempdir().unwrap();
    let ended = Sidecar::new(AUTH_PROXY)
        .env("LISTEN", &free_addr())
        .env("TOKEN_FILE", "/secrets/token")
        .mount_read_only(empty.path(), "/secrets")
        .start()
        .wait(Duration::from_secs(30));
    assert_eq!(ended.exit_code, Some(1), "{ended:?}");
    assert!(ended.logs.contains("/secrets/token"), "{}", ended.logs);
}

#[test]
fn a_rotated_token_applies_without_a_restart() {
    let s = setup(100);
    let ask = |token: &str| {
        status(&http(
            &s.listen,
            &format!("GET /kv HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"),
        ))
    };
    assert_eq!(ask(TOKEN), 200);
    // Replaced as a secret is rotated: a new file renamed over the old.
    let dir = s.secrets.path();
    std::fs::write(dir.join("token.new"), "tok-rotated-77\n").unwrap();
    std::fs::rename(dir.join("token.new"), dir.join("token")).unwrap();
    let t0 = std::time::Instant::now();
    while ask("tok-rotated-77") != 200 {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", s.proxy.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ask(TOKEN), 401, "the old token is refused");
}
