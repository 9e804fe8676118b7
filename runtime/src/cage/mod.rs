//! The cage: a Wasmtime instance whose only path to a model is `llm-call`.
//!
//! One [`Cage`] per host holds the `Engine`, the `Linker` with the WASI and
//! clawrun imports, and every claw's compiled component as an `InstancePre`
//! (compiled once, instantiated per run). Each run gets a fresh `Store`
//! holding a [`CageState`]: WASI with nothing granted (no directories, no
//! environment variables, no arguments, no sockets, no name lookup, stdin
//! closed, stdout and stderr captured in memory), a memory limit, and a
//! wall-clock deadline enforced by epoch interruption.
//!
//! The WIT interfaces are implemented one file each: [`llm`] for
//! `clawrun:claw/llm`.

mod deploy;
mod limits;
mod llm;

pub use deploy::{DeployError, MAX_COMPONENT_BYTES};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::pipe::{ClosedInputStream, MemoryOutputPipe};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

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

/// Bytes of guest stdout and stderr kept per run; the rest is dropped.
const CAPTURED_OUTPUT_BYTES: usize = 64 * 1024;

/// Limits applied to every run.
#[derive(Debug, Clone)]
pub struct CageLimits {
    /// Wall-clock time a run may take, host calls included.
    pub run_deadline: Duration,
    /// Linear memory a run may grow to, in bytes, summed over every memory
    /// of the component.
    pub memory_bytes: usize,
    /// `llm-call`s one run may make; the next one ends the run, so a claw
    /// stuck in a loop cannot spend its organisation's budget unattended.
    pub llm_calls: u32,
}

impl Default for CageLimits {
    fn default() -> Self {
        Self {
            run_deadline: Duration::from_secs(300),
            memory_bytes: 256 * 1024 * 1024,
            llm_calls: 500,
        }
    }
}

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
    limits: limits::RunLimiter,
    run: RunContext,
    llm: Arc<LlmService>,
    /// Resource reps of the tool invocations alive, oldest first.
    open_tools: Vec<u32>,
    /// `llm-call`s this run has made.
    llm_calls_made: u32,
    /// `llm-call`s this run may make.
    llm_call_limit: u32,
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
    /// What the guest wrote to stdout (bounded).
    pub stdout: String,
    /// What the guest wrote to stderr (bounded).
    pub stderr: String,
}

/// A run that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The guest trapped (a panic, an out-of-bounds access, a limit hit).
    #[error("claw `{claw}` trapped: {message}")]
    Trap {
        /// Claw name.
        claw: String,
        /// Wasmtime's description of the trap.
        message: String,
    },
    /// The run passed its wall-clock deadline.
    #[error("claw `{claw}` ran longer than its deadline of {deadline:?} and was stopped")]
    Deadline {
        /// Claw name.
        claw: String,
        /// The deadline.
        deadline: Duration,
    },
}

/// The engine, linker and compiled claws of one host.
pub struct Cage {
    engine: Engine,
    linker: Linker<CageState>,
    compiled: Mutex<HashMap<String, ClawPre<CageState>>>,
    limits: CageLimits,
    ticker_stop: Arc<AtomicBool>,
}

impl Cage {
    /// Creates the engine and linker, and starts the epoch ticker thread.
    ///
    /// # Errors
    ///
    /// When Wasmtime rejects the configuration or the linker cannot be built.
    pub fn new(limits: CageLimits) -> wasmtime::Result<Self> {
        Self::with_config(limits, false)
    }

    /// A cage whose stores can be inspected after a run, for the tests that
    /// scan guest memory for key bytes. Slower; never used to serve.
    ///
    /// # Errors
    ///
    /// As [`Cage::new`].
    #[doc(hidden)]
    pub fn new_inspectable(limits: CageLimits) -> wasmtime::Result<Self> {
        Self::with_config(limits, true)
    }

    fn with_config(limits: CageLimits, guest_debug: bool) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.guest_debug(guest_debug);
        let engine = Engine::new(&config)?;
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
            limits,
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
    /// captured, memory limited, and the run's deadline armed.
    fn store(
        &self,
        run: RunContext,
        llm: Arc<LlmService>,
    ) -> (Store<CageState>, MemoryOutputPipe, MemoryOutputPipe) {
        let stdout = MemoryOutputPipe::new(CAPTURED_OUTPUT_BYTES);
        let stderr = MemoryOutputPipe::new(CAPTURED_OUTPUT_BYTES);
        let wasi = WasiCtx::builder()
            .stdin(ClosedInputStream)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = CageState {
            wasi,
            table: ResourceTable::new(),
            limits: limits::RunLimiter::new(self.limits.memory_bytes),
            run,
            llm,
            open_tools: Vec::new(),
            llm_calls_made: 0,
            llm_call_limit: self.limits.llm_calls,
            streams: HashMap::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = (self.limits.run_deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        (store, stdout, stderr)
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
        let (mut store, _, _) = self.store(run, llm);
        pre.instantiate_async(&mut store).await.map(drop)
    }

    /// Runs the claw's `run` export on `input` in a fresh store.
    ///
    /// # Errors
    ///
    /// A [`RunError`] when the guest traps or passes its deadline; the
    /// usage of every call it made before is already recorded.
    pub async fn run(
        &self,
        pre: &ClawPre<CageState>,
        run: RunContext,
        llm: Arc<LlmService>,
        input: &str,
    ) -> Result<RunOutput, RunError> {
        let (mut store, stdout, stderr) = self.store(run, llm);
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
    ) -> Result<(RunOutput, Vec<Vec<u8>>), RunError> {
        let (mut store, stdout, stderr) = self.store(run, llm);
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
        stdout: &MemoryOutputPipe,
        stderr: &MemoryOutputPipe,
    ) -> Result<RunOutput, RunError> {
        let claw = store.data().run.claw_name.clone();
        let deadline = self.limits.run_deadline;

        let trap = |e: wasmtime::Error| {
            if matches!(
                e.downcast_ref::<wasmtime::Trap>(),
                Some(wasmtime::Trap::Interrupt)
            ) {
                RunError::Deadline {
                    claw: claw.clone(),
                    deadline,
                }
            } else {
                // A Rust claw's panic message is on its stderr: it says more
                // than the trap itself.
                let said = String::from_utf8_lossy(&stderr.contents()).into_owned();
                let said: String = said
                    .chars()
                    .rev()
                    .take(2000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                let message = if said.trim().is_empty() {
                    format!("{e:#}")
                } else {
                    format!("{}\n{e:#}", said.trim_end())
                };
                RunError::Trap {
                    claw: claw.clone(),
                    message,
                }
            }
        };
        let conversation_id = store.data().run.conversation_id.clone();
        let outcome = tokio::time::timeout(deadline, async {
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
            Err(_elapsed) => return Err(RunError::Deadline { claw, deadline }),
            Ok(Err(e)) => return Err(trap(e)),
            Ok(Ok(result)) => result,
        };
        Ok(RunOutput {
            result,
            stdout: String::from_utf8_lossy(&stdout.contents()).into_owned(),
            stderr: String::from_utf8_lossy(&stderr.contents()).into_owned(),
        })
    }
}

impl Drop for Cage {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
