//! The flags mapped onto the library's configuration: which cases, which
//! agent with which budgets, what the transcript keeps.

use super::args::{AgentArgs, SelectArgs};
use qga_harness::agent::AgentTemplate;
use qga_harness::budget::{Budgets, Mode};
use qga_harness::case::{Role, Selected};
use qga_harness::session::SessionConfig;
use qga_harness::transcript::Transcript;
use std::time::Duration;

impl SelectArgs {
    /// The selected cases (of one role, if given), or a usage error.
    pub(super) fn select(&self, role: Option<Role>) -> Result<Selected, String> {
        let selection = qga_harness::case::Selection {
            cases: self.cases.clone(),
            ids: self.case_globs.clone(),
            tags: self.tags.clone(),
            levels: Vec::new(),
            role,
            shard: self.shard,
        };
        selection.select()
    }
}

impl AgentArgs {
    /// The session configuration, or a usage error message.
    pub fn session_config(&self) -> Result<SessionConfig, String> {
        self.session_config_with(Mode::Run)
    }

    /// The budgets of `mode` on this transport, with the user's flags over
    /// them.
    pub fn budgets(&self, mode: Mode) -> Budgets {
        let mut b = Budgets::defaults(self.transport, mode);
        let ms = Duration::from_millis;
        b.reply = self.reply_timeout_ms.map_or(b.reply, ms);
        b.resync = self.resync_budget_ms.map_or(b.resync, ms);
        b.send = self.send_timeout_ms.map_or(b.send, ms);
        b.startup = self.startup_timeout_ms.map_or(b.startup, ms);
        b.vm_boot = self.vm_boot_timeout_ms.map_or(b.vm_boot, ms);
        b
    }

    /// The session configuration with the budgets of `mode` (the fuzzer's
    /// are tighter: a failing schedule is run again at every step of
    /// shrinking, and every failure costs a timeout).
    pub fn session_config_with(&self, mode: Mode) -> Result<SessionConfig, String> {
        let template = match &self.agent {
            Some(t) => AgentTemplate::parse(t).map_err(|e| e.to_string())?,
            None => qga_harness::agent::template::reference(self.transport)?,
        };
        // Before looking for the program: the hint helps even when it is
        // not installed here.
        if let Some(problem) = qga_harness::agent::template::transport_problem(&template, self.transport) {
            return Err(problem);
        }
        if !program_exists(template.program()) {
            return Err(format!("agent program not found: {}", template.program()));
        }
        let mut config = SessionConfig::new(template, self.transport);
        config.set_budgets(self.budgets(mode));
        config.vm.accel = self.vm_accel;
        Ok(config)
    }

    pub fn transcript(&self) -> Transcript {
        Transcript::new(qga_harness::transcript::Caps { bytes: self.transcript_cap, entries: self.transcript_entries })
    }
}

pub(super) fn program_exists(program: &str) -> bool {
    qga_harness::process::find_program(program, &[]).is_some()
}
