//! End-to-end tests: the `clawrun` binary, real claw components built from
//! `claws/` for wasm32-wasip2, and `clawrun dev-provider` over HTTP.

mod support;

mod api;
mod budgets;
mod custody;
mod deploy;
mod hostile;
mod keys;
mod leaks;
mod metering;
mod providers;
mod resilience;
mod runs;
mod serve;
mod streams;
