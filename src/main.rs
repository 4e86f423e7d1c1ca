use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = pony::cli::Cli::parse();
    std::process::ExitCode::from(pony::app::run(cli).code() as u8)
}
