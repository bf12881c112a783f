//! `skerry-cni` binary: reads the CNI environment and stdin, runs the command, prints JSON.

use std::io::Read;

use skerry_cni::{cmd, config, result};

fn main() {
    let mut stdin = Vec::new();
    // VERSION may come without stdin; an unreadable stdin then reads as empty.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let env = cmd::Env::from_process();
    match cmd::run(&env, &stdin) {
        Ok(Some(output)) => println!("{output}"),
        Ok(None) => {}
        Err(e) => {
            let version = config::requested_version(&stdin).unwrap_or_else(|| "1.1.0".to_owned());
            println!("{}", result::render_error(&version, e.code(), &e.to_string(), &e.details()));
            std::process::exit(1);
        }
    }
}
