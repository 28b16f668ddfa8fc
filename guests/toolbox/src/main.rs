//! A multi-purpose test guest (wasip2): `toolbox COMMAND ARGS...`
//!
//! ```text
//! listen ADDR [TEXT]     accept forever; send TEXT (default: "hello from ADDR") and close
//! connect ADDR [TRIES]   connect (retrying every 100ms, TRIES times, default 1), print what the
//!                        server sent, exit 0; exit 1 if it never connected
//! exit CODE              exit with CODE
//! trap                   trap (panic)
//! spin                   busy-loop forever, never yielding
//! sleep MS               sleep, then exit 0
//! env                    print argv and environment, exit 0
//! sink ADDR              accept one connection, read it to the end, print
//!                        "received BYTES bytes in MICROS us", exit 0
//! source ADDR MIB        connect (retrying up to 5s), send MIB mebibytes, exit 0
//! hog N                  bind up to N TCP listeners on 127.0.0.1 (ephemeral ports), printing
//!                        "holding K sockets" every 100; then hold them forever (a hostile
//!                        guest: its open-files limit ends it first)
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> &str {
        args.get(i).map(String::as_str).unwrap_or_else(|| {
            eprintln!("usage: toolbox listen|connect|exit|trap|spin|sleep|env|sink|source|hog ...");
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
            let l = TcpListener::bind(arg(2)).expect("sink: bind");
            println!("sink listening on {}", arg(2));
            let (mut c, _) = l.accept().expect("sink: accept");
            let t0 = std::time::Instant::now();
            let mut buf = vec![0u8; 256 * 1024];
            let mut total: u64 = 0;
            loop {
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(e) => panic!("sink: read: {e}"),
                }
            }
            println!("received {total} bytes in {} us", t0.elapsed().as_micros());
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
