//! `client` (grade a client under test) and `call` (be one: the reference
//! client, the positive control of `client`).

use super::args::{AgentArgs, CallArgs, ClientArgs};
use super::config::program_exists;
use super::run::{finish, load_baseline};
use super::usage;
use crate::EXIT_FAIL;
use qga_harness::budget::Mode;
use qga_harness::case::{Role, Selected};
use qga_harness::engine::client_case::{run_client_cases, ClientConfig};
use qga_harness::engine::EngineOptions;
use qga_harness::proxy::ClientTemplate;
use qga_harness::transport::TransportKind;
use std::process::ExitCode;
use std::time::Duration;

/// `client`: the client cases, with the client under test in front of the
/// harness and an agent behind it.
pub async fn client_cmd(args: ClientArgs) -> ExitCode {
    let client = match ClientTemplate::parse(&args.client) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    if !program_exists(client.program()) {
        return usage(format!("client program not found: {}", client.program()));
    }
    if args.transport == TransportKind::Socketpair {
        return usage("a client under test is given a path: use --transport unix-listen or pty");
    }
    let agent_args = AgentArgs {
        agent: args.agent.clone(),
        transport: args.agent_transport,
        reply_timeout_ms: None,
        startup_timeout_ms: args.startup_timeout_ms,
        resync_budget_ms: None,
        send_timeout_ms: None,
        vm_accel: qga_harness::vm::AccelChoice::Auto,
        vm_boot_timeout_ms: None,
        transcript_cap: args.transcript_cap,
        transcript_entries: 100_000,
    };
    let mut agent = match agent_args.session_config_with(Mode::Client) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let mut budgets = agent.budgets;
    budgets.client_timeout = args.client_timeout_ms.map_or(budgets.client_timeout, Duration::from_millis);
    budgets.client_startup = args.client_startup_ms.map_or(budgets.client_startup, Duration::from_millis);
    agent.set_budgets(budgets);
    if args.agent.is_none() {
        // Recognisable replies: the reference agent's guest-info carries a
        // nonce per reply, so no two replies of the agent are alike.
        if let Ok(t) = agent.template.with_extra(&["--variant", "nonce"]) {
            agent.template = t;
        }
    }
    let Selected { cases, catalogue_ids } = match args.select.select(Some(Role::Client)) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let baseline = match load_baseline(&args.out, &catalogue_ids) {
        Ok(b) => b,
        Err(e) => return usage(e),
    };
    let cfg = ClientConfig { client, port: args.transport, agent };
    let eo = EngineOptions { seed: args.seed.unwrap_or_else(rand::random), ..EngineOptions::default() };
    let mut result = run_client_cases(cfg, &cases, agent_args.transcript(), &eo).await;
    result.shard = args.select.shard;
    finish(&result, &args.out, baseline.as_ref())
}

/// `call`: the reference client as a client under test.
pub async fn call(args: CallArgs) -> ExitCode {
    use qga_harness::transport::Duplex;
    let duplex = if args.pty { Duplex::open_tty(&args.path) } else { Duplex::connect_unix(&args.path).await };
    let duplex = match duplex {
        Ok(d) => d,
        Err(e) => {
            eprintln!("qga-harness call: cannot open {}: {e}", args.path.display());
            return ExitCode::from(EXIT_FAIL);
        }
    };
    let job: Vec<String> = args.job.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let (lines, ok) = qga_harness::client::program::call(duplex, &job, Duration::from_millis(args.timeout_ms)).await;
    for l in &lines {
        println!("{l}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAIL)
    }
}
