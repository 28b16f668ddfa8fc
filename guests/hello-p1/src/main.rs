//! A one-shot wasip1 task: proves core modules run. Prints a greeting, its args and env, then exits
//! with `--exit CODE` (default 0).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    println!("hello from a wasip1 module: args={:?}", &args[1..]);
    for (k, v) in std::env::vars() {
        println!("env {k}={v}");
    }
    let code = args
        .iter()
        .position(|a| a == "--exit")
        .and_then(|i| args.get(i + 1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    std::process::exit(code);
}
