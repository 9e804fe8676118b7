//! The `clawrun` binary.

fn main() -> std::process::ExitCode {
    clawrun::cli::main()
}
