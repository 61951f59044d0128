//! The `vrseg` command. Parses arguments, runs, and turns any error into one
//! sentence on stderr and an exit code (see `cli::exit`).

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vrseg: error: {}", one_sentence(&err));
            cli::exit::code_for(&err)
        }
    };
    std::process::exit(code as i32);
}

/// The error and its causes on one line, leaving out a cause whose text the
/// message before it already quotes (library errors often embed their source).
fn one_sentence(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
