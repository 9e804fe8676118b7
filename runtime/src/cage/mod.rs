//! The cage: a Wasmtime instance whose only path to a model is `llm-call`.
//!
//! One [`Cage`] per host holds the `Engine`, the `Linker` with the WASI and
//! clawrun imports, and every claw's compiled component as an `InstancePre`
//! (compiled once, instantiated per run). Instances come from Wasmtime's
//! pooling allocator, sized from the ceilings of [`limits`]: [`POOL_CAGES`]
//! runs at once per host process, each memory slot as large as the highest
//! memory limit a claw may be given.
//!
//! Each run gets a fresh `Store` holding a [`CageState`]: WASI with nothing
//! granted ([`wasi`]), and the run's [`CageLimits`]: fuel for CPU, a
//! wall-clock deadline checked at every epoch tick (where the guest also
//! yields its thread to other runs), memory, tables and instances counted
//! by a `ResourceLimiter`, the size of every value crossing the boundary,
//! and the number of `llm-call`s. A run that hits a limit ends with a
//! [`RunError::Limit`] naming it.
//!
//! The WIT interfaces are implemented one file each: [`llm`] for
//! `clawrun:claw/llm`.

mod deploy;
pub mod limits;
mod llm;
pub mod wasi;

pub use deploy::{DeployError, MAX_COMPONENT_BYTES};
pub use limits::{CageLimits, LimitHit, LimitOverrides};
pub use llm::validate_request;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use wasi::CapturedOutput;

use crate::service::llm::LlmService;

/// Bindings generated from `wit/claw.wit`.
pub mod bindings {
    #![allow(
        missing_docs,
        reason = "generated code; the WIT file documents every item"
    )]

    wasmtime::component::bindgen!({
        path: "../wit",
        world: "claw",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "clawrun:claw/llm.tool-invocation": crate::cage::ToolInvocation,
            "clawrun:claw/llm.completion-stream": crate::service::stream::LlmStream,
        },
    });
}

pub use bindings::ClawPre;

/// How often the epoch advances; the granularity of run deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Runs one host process can hold at once: the pooling allocator's
/// number of component instance slots. A run started while all are taken
/// fails with [`RunError::Capacity`]. Agents spend most of a run waiting
/// on their model, so a host holds many at once: 1,000 cages of `hello`
/// waiting on a slow provider took about 210 MiB resident in all (see
/// BENCHMARKS.md).
pub const POOL_CAGES: u32 = 1024;

/// Who a run is for: every usage record of the run carries these.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Organisation.
    pub org_id: String,
    /// Claw id.
    pub claw_id: String,
    /// Claw name, for logs.
    pub claw_name: String,
    /// This run's id.
    pub run_id: String,
    /// Conversation the input belongs to.
    pub conversation_id: String,
}

/// An open tool invocation, held in the run's resource table.
#[derive(Debug, Clone)]
pub struct ToolInvocation {
    /// Host-assigned id (`ti_…`).
    pub id: String,
    /// Tool name, as the claw gave it.
    pub name: String,
    /// The model's tool call id, when the claw gave one.
    pub call_id: Option<String>,
}

/// The data of one run's `Store`.
pub struct CageState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: limits::RunLimiter,
    limits: CageLimits,
    run: RunContext,
    llm: Arc<LlmService>,
    /// Resource reps of the tool invocations alive, oldest first.
    open_tools: Vec<u32>,
    /// `llm-call`s this run has made.
    llm_calls_made: u32,
    /// The tasks of the run's streams, by resource rep: each is finished
    /// (its usage recorded) when the claw drops the stream, or when the
    /// run ends.
    streams: HashMap<u32, crate::service::stream::StreamTask>,
}

impl WasiView for CageState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// How a run ended, when it ran to completion.
#[derive(Debug)]
pub struct RunOutput {
    /// The claw's answer, or the error text it returned.
    pub result: Result<String, String>,
    /// What the guest wrote to stdout, up to
    /// [`wasi::CAPTURED_OUTPUT_BYTES`].
    pub stdout: String,
    /// What the guest wrote to stderr, up to
    /// [`wasi::CAPTURED_OUTPUT_BYTES`].
    pub stderr: String,
    /// Bytes of stdout and stderr written past the capture and dropped.
    pub output_dropped: usize,
    /// Fuel the run burned, to size its `--fuel` limit.
    pub fuel_used: u64,
}

/// A run that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The guest trapped (a panic, an out-of-bounds access, …).
    #[error("claw `{claw}` trapped: {message}")]
    Trap {
        /// Claw name.
        claw: String,
        /// The guest's last stderr and Wasmtime's description of the trap.
        message: String,
    },
    /// The run hit one of its limits and was stopped.
    #[error("claw `{claw}` {hit}; {remedy}{detail}")]
    Limit {
        /// Claw name.
        claw: String,
        /// The limit.
        hit: LimitHit,
        /// How to raise it.
        remedy: String,
        /// The guest's last stderr, when it said something, on a new line.
        detail: String,
    },
    /// Every cage slot of this host process is taken.
    #[error(
        "this host is running as many claws as it can hold ({POOL_CAGES}); try again when some \
         have finished"
    )]
    Capacity,
}

impl RunError {
    /// The limit the run hit, if it ended on one.
    pub fn limit(&self) -> Option<&LimitHit> {
        match self {
            RunError::Limit { hit, .. } => Some(hit),
            _ => None,
        }
    }
}

/// The last `max` characters of `text`.
fn tail(text: &str, max: usize) -> &str {
    let skip = text.chars().count().saturating_sub(max);
    text.char_indices()
        .nth(skip)
        .map_or("", |(i, _)| &text[i..])
}

/// The engine, linker and compiled claws of one host.
pub struct Cage {
    engine: Engine,
    linker: Linker<CageState>,
    compiled: Mutex<HashMap<String, ClawPre<CageState>>>,
    ticker_stop: Arc<AtomicBool>,
}

impl Cage {
    /// Creates the engine (fuel, epochs, pooling allocator) and linker,
    /// and starts the epoch ticker thread.
    ///
    /// # Errors
    ///
    /// When Wasmtime rejects the configuration or the linker cannot be built.
    pub fn new() -> wasmtime::Result<Self> {
        Self::with_config(false)
    }

    /// A cage whose stores can be inspected after a run, for the tests that
    /// scan guest memory for key bytes. Slower; never used to serve.
    ///
    /// # Errors
    ///
    /// As [`Cage::new`].
    #[doc(hidden)]
    pub fn new_inspectable() -> wasmtime::Result<Self> {
        Self::with_config(true)
    }

    fn with_config(guest_debug: bool) -> wasmtime::Result<Self> {
        let engine = Engine::new(&engine_config(guest_debug))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::Claw::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (stop, ticking) = (ticker_stop.clone(), engine.clone());
        std::thread::Builder::new()
            .name("clawrun-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(wasmtime::Error::from)?;

        Ok(Self {
            engine,
            linker,
            compiled: Mutex::default(),
            ticker_stop,
        })
    }

    /// The compiled claw with this digest, compiling `bytes` the first time.
    ///
    /// # Errors
    ///
    /// A [`DeployError`] saying what is wrong with the component.
    pub fn prepare(&self, digest: &str, bytes: &[u8]) -> Result<ClawPre<CageState>, DeployError> {
        if let Some(pre) = self.lock_compiled().get(digest) {
            return Ok(pre.clone());
        }
        let pre = deploy::compile(&self.engine, &self.linker, bytes)?;
        self.lock_compiled().insert(digest.to_owned(), pre.clone());
        Ok(pre)
    }

    /// Checks that `bytes` is a claw component this host can run, without
    /// keeping it.
    ///
    /// # Errors
    ///
    /// A [`DeployError`] saying what is wrong.
    pub fn validate(&self, bytes: &[u8]) -> Result<(), DeployError> {
        deploy::compile(&self.engine, &self.linker, bytes).map(drop)
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, HashMap<String, ClawPre<CageState>>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh store for one run: WASI with nothing granted, output
    /// captured, and the run's limits armed.
    fn store(
        &self,
        run: RunContext,
        llm: Arc<LlmService>,
        limits: &CageLimits,
    ) -> wasmtime::Result<(Store<CageState>, CapturedOutput, CapturedOutput)> {
        let stdout = CapturedOutput::new(wasi::CAPTURED_OUTPUT_BYTES);
        let stderr = CapturedOutput::new(wasi::CAPTURED_OUTPUT_BYTES);
        let state = CageState {
            wasi: wasi::context(&stdout, &stderr),
            table: ResourceTable::new(),
            limiter: limits::RunLimiter::new(limits),
            limits: limits.clone(),
            run,
            llm,
            open_tools: Vec::new(),
            llm_calls_made: 0,
            streams: HashMap::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(limits.fuel)?;
        // At every epoch tick the guest yields its thread, so a claw that
        // never calls the host cannot starve other runs, and the deadline
        // is checked.
        let deadline = Instant::now() + limits.run_deadline;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        Ok((store, stdout, stderr))
    }

    /// Instantiates a claw in a fresh run store without calling it: the
    /// fixed cost of starting a cage, measured by the benchmarks.
    ///
    /// # Errors
    ///
    /// When instantiation fails.
    pub async fn instantiate(
        &self,
        pre: &ClawPre<CageState>,
        run: RunContext,
        llm: Arc<LlmService>,
    ) -> wasmtime::Result<()> {
        let (mut store, _, _) = self.store(run, llm, &CageLimits::default())?;
        pre.instantiate_async(&mut store).await.map(drop)
    }

    /// Runs the claw's `run` export on `input` in a fresh store, within
    /// `limits`.
    ///
    /// # Errors
    ///
    /// A [`RunError`] when the guest traps or hits a limit; the usage of
    /// every call it made before is already recorded.
    pub async fn run(
        &self,
        pre: &ClawPre<CageState>,
        run: RunContext,
        llm: Arc<LlmService>,
        input: &str,
        limits: &CageLimits,
    ) -> Result<RunOutput, RunError> {
        let claw = run.claw_name.clone();
        let (mut store, stdout, stderr) =
            self.store(run, llm, limits).map_err(|e| RunError::Trap {
                claw,
                message: format!("{e:#}"),
            })?;
        self.run_in(&mut store, pre, input, &stdout, &stderr).await
    }

    /// Runs like [`Cage::run`] and also returns a copy of every linear
    /// memory of the instance afterwards. Needs [`Cage::new_inspectable`].
    ///
    /// # Errors
    ///
    /// As [`Cage::run`].
    #[doc(hidden)]
    pub async fn run_and_dump_memory(
        &self,
        pre: &ClawPre<CageState>,
        run: RunContext,
        llm: Arc<LlmService>,
        input: &str,
        limits: &CageLimits,
    ) -> Result<(RunOutput, Vec<Vec<u8>>), RunError> {
        let claw = run.claw_name.clone();
        let (mut store, stdout, stderr) =
            self.store(run, llm, limits).map_err(|e| RunError::Trap {
                claw,
                message: format!("{e:#}"),
            })?;
        let output = self
            .run_in(&mut store, pre, input, &stdout, &stderr)
            .await?;
        let mut memories = Vec::new();
        for instance in store.debug_all_instances() {
            let mut index = 0;
            while let Some(memory) = instance.debug_memory(&mut store, index) {
                memories.push(memory.data(&store).to_vec());
                index += 1;
            }
        }
        Ok((output, memories))
    }

    async fn run_in(
        &self,
        store: &mut Store<CageState>,
        pre: &ClawPre<CageState>,
        input: &str,
        stdout: &CapturedOutput,
        stderr: &CapturedOutput,
    ) -> Result<RunOutput, RunError> {
        let claw = store.data().run.claw_name.clone();
        let limits = store.data().limits.clone();
        let conversation_id = store.data().run.conversation_id.clone();
        let limit = |hit: LimitHit| {
            let said = stderr.text();
            let said = tail(said.trim_end(), 2000);
            RunError::Limit {
                remedy: hit.remedy(&claw),
                detail: if said.is_empty() {
                    String::new()
                } else {
                    format!("\nthe claw's last words on stderr: {said}")
                },
                claw: claw.clone(),
                hit,
            }
        };
        let checked = [
            ("its input", input),
            ("its conversation id", &conversation_id),
        ]
        .into_iter()
        .try_for_each(|(what, value)| {
            limits::check_value(what, value.len(), limits.max_value_bytes)
        });
        if let Err(hit) = checked {
            return Err(limit(hit));
        }

        // The epoch callback stops guest code at the deadline; this timer
        // also stops a run waiting on the host (a slow provider).
        let outcome = tokio::time::timeout(limits.run_deadline, async {
            let instance = pre.instantiate_async(&mut *store).await?;
            instance
                .call_run(&mut *store, input, &conversation_id)
                .await
        })
        .await;
        // Streams the claw left open (a trap, a deadline, or simply not
        // dropping them) are stopped and recorded before the run returns.
        for (_, task) in std::mem::take(&mut store.data_mut().streams) {
            task.finish().await;
        }
        let result = match outcome {
            Err(_elapsed) => return Err(limit(LimitHit::Deadline(limits.run_deadline))),
            Ok(Err(e)) => {
                return Err(match classify(&e, store.data(), &limits) {
                    Some(Failure::Limit(hit)) => limit(hit),
                    Some(Failure::Capacity) => RunError::Capacity,
                    None => {
                        // A Rust claw's panic message is on its stderr: it
                        // says more than the trap itself.
                        let said = stderr.text();
                        let said = tail(said.trim_end(), 2000);
                        RunError::Trap {
                            claw: claw.clone(),
                            message: if said.trim().is_empty() {
                                format!("{e:#}")
                            } else {
                                format!("{said}\n{e:#}")
                            },
                        }
                    }
                });
            }
            Ok(Ok(result)) => result,
        };
        let returned = match &result {
            Ok(text) => ("its output", text.len()),
            Err(text) => ("its error text", text.len()),
        };
        if let Err(hit) = limits::check_value(returned.0, returned.1, limits.max_value_bytes) {
            return Err(limit(hit));
        }
        let fuel_used = limits.fuel - store.get_fuel().unwrap_or(limits.fuel);
        Ok(RunOutput {
            result,
            fuel_used,
            stdout: stdout.text(),
            stderr: stderr.text(),
            output_dropped: stdout.dropped() + stderr.dropped(),
        })
    }
}

/// What ended a run, when it was not a plain trap.
enum Failure {
    Limit(LimitHit),
    Capacity,
}

/// Explains a failed run: a limit it hit, or a full pool.
fn classify(e: &wasmtime::Error, state: &CageState, limits: &CageLimits) -> Option<Failure> {
    if let Some(hit) = e.downcast_ref::<LimitHit>() {
        return Some(Failure::Limit(hit.clone()));
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return Some(Failure::Capacity);
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            return Some(Failure::Limit(LimitHit::Deadline(limits.run_deadline)));
        }
        Some(wasmtime::Trap::OutOfFuel) => {
            return Some(Failure::Limit(LimitHit::Fuel(limits.fuel)));
        }
        Some(wasmtime::Trap::StackOverflow) => return Some(Failure::Limit(LimitHit::Stack)),
        _ => {}
    }
    if let Some(hit) = &state.limiter.refused {
        return Some(Failure::Limit(hit.clone()));
    }
    // Wasmtime reports these as plain errors at instantiation.
    let text = format!("{e:#}");
    if text.contains("instance count too high") || text.contains("core module instances") {
        return Some(Failure::Limit(LimitHit::Instances(limits.instances)));
    }
    None
}

/// The engine configuration: async, fuel, epochs, a bounded Wasm stack,
/// and the pooling allocator sized from the ceilings of [`limits`].
fn engine_config(guest_debug: bool) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    let memories = u32::try_from(limits::MAX_MEMORIES).unwrap_or(u32::MAX);
    pool.total_component_instances(POOL_CAGES)
        // A claw built with claw-sdk uses three core instances, one memory
        // and two tables; the totals leave room for about twice that per
        // run on average. Each memory slot reserves (not commits) 4 GiB of
        // address space, so the pool stays within a few TiB of the 128 TiB
        // a process has, with room for several engines per process.
        .total_core_instances(POOL_CAGES * 8)
        .total_memories(POOL_CAGES * 2)
        .total_tables(POOL_CAGES * 4)
        .total_stacks(POOL_CAGES)
        .max_core_instances_per_component(limits::MAX_INSTANCES as u32)
        .max_memories_per_component(memories)
        .max_tables_per_component(memories)
        .max_memory_size((limits::MAX_MEMORY_MIB << 20) as usize)
        .table_elements(limits::MAX_TABLE_ELEMENTS as usize);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .consume_fuel(true)
        .max_wasm_stack(limits::WASM_STACK_BYTES)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .guest_debug(guest_debug);
    config
}

impl Drop for Cage {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
