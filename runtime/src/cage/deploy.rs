//! Checking and compiling an uploaded claw component.

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::{CageState, ClawPre};

/// Largest component accepted, in bytes. Real claws are far smaller (the
/// examples are under 200 KiB); the cap bounds compile time and storage.
pub const MAX_COMPONENT_BYTES: usize = 32 * 1024 * 1024;

/// Why a file cannot be deployed as a claw. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Larger than [`MAX_COMPONENT_BYTES`].
    #[error("the file is {0} bytes; a claw component may be at most {MAX_COMPONENT_BYTES} bytes")]
    TooLarge(usize),
    /// No `\0asm` header.
    #[error(
        "not a WebAssembly file (it does not start with the \\0asm header): deploy the .wasm \
         file that `cargo build --target wasm32-wasip2` produced"
    )]
    NotWasm,
    /// A core module rather than a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the claw for the \
         wasm32-wasip2 target, which produces a component"
    )]
    CoreModule,
    /// Fails to parse or validate as a component.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// Imports something the host does not provide.
    #[error(
        "the component imports something clawrun does not provide ({0}); a claw may import \
         only clawrun:claw/llm and WASI 0.2 interfaces: build it with claw-sdk"
    )]
    UnknownImport(String),
    /// Does not export the claw world's `run` function.
    #[error(
        "the component does not implement the claw world ({0}): it must export \
         `run: func(input: string, conversation-id: string) -> result<string, string>`, \
         as claw_sdk::export! does"
    )]
    WrongWorld(String),
}

/// Validates and compiles `bytes` into an instantiable claw.
pub(super) fn compile(
    engine: &Engine,
    linker: &Linker<CageState>,
    bytes: &[u8],
) -> Result<ClawPre<CageState>, DeployError> {
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(DeployError::TooLarge(bytes.len()));
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(DeployError::NotWasm);
    }
    // The version field tells the two apart: 1 for core modules, 0x0d with
    // layer 1 for components.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(DeployError::CoreModule);
    }
    let component =
        Component::new(engine, bytes).map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
    let instance_pre = linker
        .instantiate_pre(&component)
        .map_err(|e| DeployError::UnknownImport(format!("{e:#}")))?;
    ClawPre::new(instance_pre).map_err(|e| DeployError::WrongWorld(format!("{e:#}")))
}
