//! A multi-purpose test guest (wasip2): `toolbox COMMAND ARGS...`
//!
//! ```text
//! listen ADDR [TEXT] [MS] after MS (default 0) ms, accept forever; send TEXT (default:
//!                        "hello from ADDR") and close
//! connect ADDR [TRIES]   connect (retrying every 100ms, TRIES times, default 1), print what the
//!                        server sent, exit 0; exit 1 if it never connected
//! resolve NAME...        look each NAME up (WASI ip-name-lookup): print "NAME: ADDR ADDR..." or
//!                        "NAME: error: MESSAGE"; exit 1 if any failed
//! exit CODE              exit with CODE
//! trap                   trap (panic)
//! spin                   busy-loop forever, never yielding
//! sleep MS               sleep, then exit 0
//! env                    print argv and environment, exit 0
//! sink ADDR [COUNT]      accept COUNT connections (default 1; 0: forever) one after another,
//!                        read each to the end, print "received BYTES bytes in MICROS us"
//!                        for each; then exit 0
//! source ADDR MIB        connect (retrying up to 5s), send MIB mebibytes, exit 0
//! hog N                  bind up to N TCP listeners on 127.0.0.1 (ephemeral ports), printing
//!                        "holding K sockets" every 100; then hold them forever (a hostile
//!                        guest: its open-files limit ends it first)
//! fs OP...               file operations in order, each one argument "VERB PATH [ARG]"; each
//!                        prints "VERB PATH: ok[: RESULT]" or "VERB PATH: error: KIND: MESSAGE";
//!                        exit 1 if any failed, else 0. VERBs: write PATH TEXT, append PATH TEXT, cat PATH, ls DIR,
//!                        mkdir PATH, rm PATH, rmdir PATH, mv PATH NEW,
//!                        fill PATH KIB (write KIB KiB in 64 KiB chunks: "N bytes in MICROS
//!                        us", or how far it got),
//!                        hold (stay alive, serving nothing)
//! chain DIR N           nest N directories under DIR/c the way a hostile guest does in
//!                        seconds (mkdir DIR/n; mv DIR/c DIR/n/c; mv DIR/n DIR/c; repeated),
//!                        print "chain of N levels" and stay alive (the pod is then deleted)
//! small-writes PATH      write PATH 64 bytes at a time (a host call each), starting over
//!                        every MiB, forever (a guest whose work is mostly host calls)
//! fill-loop PATH         write PATH in 64 KiB chunks until a write fails, start over, forever
//!                        (a guest pressing against its volume's size limit)
//! http ADDR [FLAG...]    an HTTP/1.1 server for probes and hooks: GET /status/CODE answers
//!                        CODE, GET /shutdown answers 200, prints "shutdown requested" and
//!                        exits 0, anything else answers 200 "ok". FLAGs:
//!                        --delay MS (wait before listening), --hang-after MS (then stop
//!                        answering, listener held: a deadlocked server), --ignore-shutdown
//!                        (answer /shutdown but keep serving)
//! get ADDR PATH [HEADER...]  one HTTP/1.1 GET (each HEADER as `Name: value`), retrying the
//!                        connect for 5 s; print the status line and the body; exit 0
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> &str {
        args.get(i).map(String::as_str).unwrap_or_else(|| {
            eprintln!("usage: toolbox listen|connect|resolve|exit|trap|spin|sleep|env|sink|source|hog|fs|chain|small-writes|fill-loop|http ...");
            std::process::exit(2)
        })
    };
    match arg(1) {
        "hog" => {
            let n: usize = arg(2).parse().unwrap_or(20_000);
            let mut held = Vec::new();
            while held.len() < n {
                match TcpListener::bind("127.0.0.1:0") {
                    Ok(l) => held.push(l),
                    Err(e) => {
                        println!("bind failed after {} sockets: {e}", held.len());
                        break;
                    }
                }
                if held.len() % 100 == 0 {
                    println!("holding {} sockets", held.len());
                }
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "listen" => {
            let addr = arg(2);
            let text = args.get(3).cloned().unwrap_or(format!("hello from {addr}"));
            if let Some(ms) = args.get(4) {
                std::thread::sleep(Duration::from_millis(ms.parse().expect("listen delay MS")));
            }
            let l = TcpListener::bind(addr).unwrap_or_else(|e| {
                eprintln!("cannot listen on {addr}: {e}");
                std::process::exit(1)
            });
            println!("listening on {addr}");
            for c in l.incoming().flatten() {
                let mut c = c;
                let _ = c.write_all(text.as_bytes());
            }
        }
        "connect" => {
            let addr = arg(2);
            let tries: u32 = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
            for i in 0..tries {
                match TcpStream::connect(addr) {
                    Ok(mut c) => {
                        let mut s = String::new();
                        let _ = c.read_to_string(&mut s);
                        println!("connected to {addr}: {s}");
                        return;
                    }
                    Err(e) if i + 1 == tries => {
                        println!("cannot connect to {addr}: {e}");
                        std::process::exit(1)
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        "resolve" => {
            let mut failed = false;
            for name in &args[2..] {
                match (name.as_str(), 0).to_socket_addrs() {
                    Ok(addrs) => {
                        let ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                        println!("{name}: {}", ips.join(" "));
                    }
                    Err(e) => {
                        println!("{name}: error: {e}");
                        failed = true;
                    }
                }
            }
            std::process::exit(failed as i32)
        }
        "exit" => {
            let code: i32 = arg(2).parse().expect("exit CODE");
            println!("exiting with {code}");
            std::process::exit(code)
        }
        "trap" => panic!("trap requested"),
        "spin" => {
            println!("spinning");
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "sleep" => std::thread::sleep(Duration::from_millis(arg(2).parse().expect("sleep MS"))),
        "sink" => {
            let count: usize = args
                .get(3)
                .map_or(1, |n| n.parse().expect("sink ADDR [COUNT]"));
            let l = TcpListener::bind(arg(2)).expect("sink: bind");
            println!("sink listening on {}", arg(2));
            let mut buf = vec![0u8; 256 * 1024];
            let mut served = 0;
            while count == 0 || served < count {
                let (mut c, _) = l.accept().expect("sink: accept");
                let t0 = std::time::Instant::now();
                let mut total: u64 = 0;
                loop {
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(e) => panic!("sink: read: {e}"),
                    }
                }
                println!("received {total} bytes in {} us", t0.elapsed().as_micros());
                served += 1;
            }
        }
        "source" => {
            let addr = arg(2);
            let mib: usize = arg(3).parse().expect("source ADDR MIB");
            let mut c = (0..500)
                .find_map(|_| {
                    TcpStream::connect(addr)
                        .inspect_err(|_| std::thread::sleep(Duration::from_millis(10)))
                        .ok()
                })
                .expect("source: connect");
            let chunk = vec![0x5au8; 256 * 1024];
            for _ in 0..mib * 4 {
                c.write_all(&chunk).expect("source: write");
            }
        }
        "http" => http(arg(2), &args[3..]),
        "get" => {
            let (addr, path) = (arg(2), arg(3));
            let mut c = (0..50)
                .find_map(|_| {
                    TcpStream::connect(addr)
                        .inspect_err(|_| std::thread::sleep(Duration::from_millis(100)))
                        .ok()
                })
                .unwrap_or_else(|| {
                    println!("get: cannot connect to {addr}");
                    std::process::exit(1)
                });
            let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
            for h in &args[4..] {
                req.push_str(&format!("{h}\r\n"));
            }
            req.push_str("\r\n");
            c.write_all(req.as_bytes()).expect("get: send");
            let mut raw = String::new();
            let _ = c.read_to_string(&mut raw);
            let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
            println!("{}", head.lines().next().unwrap_or(""));
            println!("{body}");
        }
        "fs" => {
            let failed = args[2..].iter().filter(|op| !fs_op(op)).count();
            std::process::exit(i32::from(failed > 0))
        }
        "chain" => {
            let dir = std::path::Path::new(arg(2));
            let n: usize = arg(3).parse().expect("chain N");
            let (c, next) = (dir.join("c"), dir.join("n"));
            std::fs::create_dir(&c).expect("mkdir DIR/c");
            for i in 0..n {
                let step = std::fs::create_dir(&next)
                    .and_then(|()| std::fs::rename(&c, next.join("c")))
                    .and_then(|()| std::fs::rename(&next, &c));
                if let Err(e) = step {
                    println!("chain: failed at level {i}: {e}");
                    std::process::exit(1);
                }
            }
            println!("chain of {n} levels");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "small-writes" => {
            let path = arg(2);
            let line = [b'x'; 64];
            loop {
                let Ok(mut f) = std::fs::File::create(path) else {
                    continue;
                };
                for _ in 0..(1 << 14) {
                    if f.write_all(&line).is_err() {
                        break;
                    }
                }
            }
        }
        "fill-loop" => {
            let path = arg(2);
            let chunk = vec![0x42u8; 64 * 1024];
            let mut reported = false;
            loop {
                let Ok(mut f) = std::fs::File::create(path) else {
                    continue;
                };
                let mut n = 0u64;
                while f.write_all(&chunk).is_ok() {
                    n += chunk.len() as u64;
                }
                if !reported {
                    println!("fill-loop: a write failed after {n} bytes; going on");
                    reported = true;
                }
            }
        }
        "env" => {
            println!("args: {:?}", &args);
            for (k, v) in std::env::vars() {
                println!("env: {k}={v}");
            }
        }
        other => {
            eprintln!("unknown command {other:?}");
            std::process::exit(2)
        }
    }
}

/// One `fs` operation: "VERB PATH [ARG]" (ARG is the rest of the string); false if it failed.
fn fs_op(op: &str) -> bool {
    let mut parts = op.splitn(3, ' ');
    let verb = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("");
    let result: std::io::Result<String> = match verb {
        "write" => std::fs::write(path, rest).map(|()| String::new()),
        "append" => std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut f| f.write_all(rest.as_bytes()))
            .map(|()| String::new()),
        "cat" => std::fs::read_to_string(path).map(|t| format!("{t:?}")),
        "ls" => std::fs::read_dir(path).map(|d| {
            let mut names: Vec<String> = d
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names.join(",")
        }),
        "mkdir" => std::fs::create_dir(path).map(|()| String::new()),
        "rm" => std::fs::remove_file(path).map(|()| String::new()),
        "rmdir" => std::fs::remove_dir(path).map(|()| String::new()),
        "mv" => std::fs::rename(path, rest).map(|()| String::new()),
        "fill" => {
            let kib: u64 = rest.parse().unwrap_or(0);
            let chunk = vec![0x42u8; 64 * 1024];
            let t0 = std::time::Instant::now();
            std::fs::File::create(path).and_then(|mut f| {
                let mut n = 0u64;
                while n < kib * 1024 {
                    let len = chunk.len().min((kib * 1024 - n) as usize);
                    if let Err(e) = f.write_all(&chunk[..len]) {
                        return Err(std::io::Error::new(
                            e.kind(),
                            format!("after {n} bytes: {e}"),
                        ));
                    }
                    n += len as u64;
                }
                Ok(format!("{n} bytes in {} us", t0.elapsed().as_micros()))
            })
        }
        "hold" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        other => {
            println!("{op}: error: unknown verb {other:?}");
            return false;
        }
    };
    match &result {
        Ok(r) if r.is_empty() => println!("{verb} {path}: ok"),
        Ok(r) => println!("{verb} {path}: ok: {r}"),
        Err(e) => println!("{verb} {path}: error: {:?}: {e}", e.kind()),
    }
    result.is_ok()
}

/// `http ADDR [FLAG...]`: see the module's docs.
fn http(addr: &str, flags: &[String]) {
    let ms = |name: &str| {
        flags
            .iter()
            .position(|f| f == name)
            .map(|i| Duration::from_millis(flags[i + 1].parse().expect("FLAG MS")))
    };
    if let Some(d) = ms("--delay") {
        std::thread::sleep(d);
    }
    let hang_after = ms("--hang-after");
    let ignore_shutdown = flags.iter().any(|f| f == "--ignore-shutdown");
    let l = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("cannot listen on {addr}: {e}");
        std::process::exit(1)
    });
    println!("http listening on {addr}");
    let t0 = std::time::Instant::now();
    for mut c in l.incoming().flatten() {
        if hang_after.is_some_and(|h| t0.elapsed() >= h) {
            println!("hanging (listener held, nothing answered)");
            drop(c);
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        // The request head, up to its blank line (or 8 KiB).
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            match c.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let head = String::from_utf8_lossy(&head);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let (code, body) = match path.strip_prefix("/status/") {
            Some(code) => (code.parse().unwrap_or(500), "status"),
            None if path == "/shutdown" => (200, "bye"),
            None => (200, "ok"),
        };
        let _ = write!(
            c,
            "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = c.flush();
        drop(c);
        if path == "/shutdown" {
            println!("shutdown requested");
            if !ignore_shutdown {
                std::process::exit(0);
            }
        }
    }
}
