//! clawrun: runs AI agents ("claws") compiled to WebAssembly components, each
//! in a cage whose only path to a language model is the WIT import
//! `llm-call`, with the organisation's own provider keys held by the host.
//!
//! How it is organised:
//!
//! - [`cage`]: the Wasmtime engine, linker, limits, and one host file per WIT
//!   interface;
//! - [`vault`]: key encryption, the master key and the secret types;
//! - [`providers`]: one module per wire format, and the development emulator;
//! - [`metering`]: turning provider calls into usage records;
//! - [`db`]: persistence (embedded SQLite) behind the [`db::Db`] trait;
//! - [`service`]: the operations the CLI and API call, including the policy
//!   of one `llm-call`;
//! - [`api`]: `clawrun serve` (metrics so far);
//! - [`cli`]: argument parsing and output formatting only.

pub mod api;
pub mod cage;
pub mod cli;
pub mod db;
#[doc(hidden)]
pub mod fuzzing;
pub mod metering;
pub mod providers;
pub mod service;
pub mod vault;
