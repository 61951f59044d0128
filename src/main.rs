//! The `vrseg` command. Parses arguments, runs, and turns any error into one
//! sentence on stderr and an exit code (see `cli::exit`).

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` joins the context chain into one line.
            eprintln!("vrseg: error: {err:#}");
            cli::exit::code_for(&err)
        }
    };
    std::process::exit(code as i32);
}
