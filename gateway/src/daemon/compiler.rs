//! The policy compiler, off the event loop. It owns the incremental reloader: reading the
//! policy directory, parsing, validating, compiling and laying the result out for the maps
//! happen on a thread of its own, so a whole-policy reload (about a second for 10,000
//! devices) never holds up events, quarantines or the control socket, and a hostile file in
//! the repository can at worst fail its own reload. The controller installs the result and
//! flips the generation on its loop when it arrives (`Controller::finish_reload`).
//!
//! One job at a time: the controller sends the next only after the last result, so the
//! slot a job lays its contents out for is still the inactive one when they are installed.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use super::lkg::Snapshot;
use super::DaemonError;
use crate::policy::{self, incremental::How, windows::Schedule, Compiled, MapContents, Sources};

/// What to compile for.
#[derive(Clone, Debug)]
pub struct Job {
    /// The inactive slot, which the contents are laid out for.
    pub slot: u8,
    pub generation: u64,
    pub ifindexes: BTreeMap<String, u32>,
    /// What asked for the reload (for the log).
    pub why: String,
    pub started: Instant,
    /// Compile these sources, not the directory: the policy in force, again, for the
    /// clock (a service window opens or closes; see [`crate::policy::windows`]).
    pub in_force: Option<InForce>,
}

/// The policy a generation was compiled from, kept to compile it again at a service
/// window's boundary without reading the directory (which may hold a broken edit by then).
#[derive(Clone, Debug)]
pub struct InForce {
    pub sources: Arc<Sources>,
    pub commit: Option<String>,
    /// They are the last-known-good's (the repository was refused at start).
    pub lkg: bool,
    /// Compile with every service window closed (the daemon stopping: nothing is left to
    /// close them on time).
    pub windows_closed: bool,
}

/// A compile's outcome.
pub struct Output {
    pub compiled: Arc<Compiled>,
    pub how: How,
    pub contents: MapContents,
    /// The git commit of the policy checkout (read here, off the loop: `git` on a hostile
    /// checkout is as untrusted as its files).
    pub commit: Option<String>,
    /// The sources compiled, to keep as the last-known-good once they enforce; `None` when
    /// they are the last-known-good.
    pub sources: Option<Arc<Sources>>,
    /// The policy's service windows and which are open in `compiled`.
    pub schedule: Schedule,
    /// What was compiled, for [`Job::in_force`].
    pub in_force: InForce,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("how", &self.how)
            .field("commit", &self.commit)
            .finish_non_exhaustive()
    }
}

/// A finished job.
#[derive(Debug)]
pub struct Done {
    pub job: Job,
    pub result: Result<Output, DaemonError>,
}

/// The policy directory's compiler.
pub struct Compiler {
    dir: PathBuf,
    reloader: Arc<Mutex<policy::incremental::Reloader>>,
    /// The gateway of the fleet this host is (`gateway` in the config).
    gateway: Option<String>,
    /// This host among the gateway's members (`member`, else the host name).
    member: String,
}

impl Compiler {
    pub fn new(dir: &std::path::Path, gateway: Option<String>, member: String) -> Compiler {
        Compiler {
            dir: dir.to_path_buf(),
            reloader: Arc::new(Mutex::new(policy::incremental::Reloader::new(dir))),
            gateway,
            member,
        }
    }

    /// Which gateway and member this host is.
    fn id(&self) -> (Option<&str>, &str) {
        (self.gateway.as_deref(), &self.member)
    }

    /// Compiles on the calling thread (at start, before events are served).
    pub fn compile(&self, job: &Job) -> Result<Output, DaemonError> {
        match &job.in_force {
            Some(f) => compile_in_force(&self.dir, f, self.id(), job),
            None => compile(&self.dir, &self.reloader, self.id(), job),
        }
    }

    /// Compiles the last-known-good policy `snap` (at start, when the repository is refused).
    pub fn compile_snapshot(&self, snap: &Snapshot, job: &Job) -> Result<Output, DaemonError> {
        let in_force = InForce {
            sources: Arc::new(Sources::new(snap.source_files())),
            commit: snap.commit.clone(),
            lkg: true,
            windows_closed: false,
        };
        compile_in_force(&snap.policy_dir, &in_force, self.id(), job)
    }

    /// Compiles on a thread of its own and sends the result to `done`.
    pub fn spawn(&self, job: Job, done: tokio::sync::mpsc::UnboundedSender<Done>) {
        let (dir, reloader) = (self.dir.clone(), self.reloader.clone());
        let (gateway, member) = (self.gateway.clone(), self.member.clone());
        let spawned = std::thread::Builder::new()
            .name("compile".into())
            .spawn(move || {
                let id = (gateway.as_deref(), member.as_str());
                let result = match &job.in_force {
                    Some(f) => compile_in_force(&dir, f, id, &job),
                    None => compile(&dir, &reloader, id, &job),
                };
                let _ = done.send(Done { job, result });
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the policy compiler's thread");
        }
    }
}

/// What this gateway enforces of a compiled policy: all of it when the policy names no
/// gateways, else the devices behind the interfaces of the gateway the config names (see
/// [`gateway`]).
pub fn view(
    policy: &policy::Policy,
    compiled: Arc<Compiled>,
    id: (Option<&str>, &str),
) -> Result<Arc<Compiled>, String> {
    Ok(match gateway(policy, id)? {
        None => compiled,
        Some(gw) => Arc::new(compiled.for_gateway(gw)),
    })
}

/// Which of the policy's gateways this host (`gateway` and `member` of its configuration)
/// is: `None` when the policy names none. Refused (as a policy error, so the gateway keeps
/// enforcing what it was) when the two disagree: a policy that names gateways needs the
/// configuration to say which this host is, a configuration that names one needs a policy
/// that has it, and a gateway that lists its members must list this host.
pub fn gateway<'p>(
    policy: &'p policy::Policy,
    (gateway, member): (Option<&str>, &str),
) -> Result<Option<&'p policy::model::Gateway>, String> {
    let gateways = &policy.site.gateways;
    let quoted = |v: &mut dyn Iterator<Item = &String>| {
        v.map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", ")
    };
    match gateway {
        None if gateways.is_empty() => Ok(None),
        None => Err(format!(
            "the policy names gateways ({}): set `gateway = \"<name>\"` in the configuration to say which this host is",
            quoted(&mut gateways.keys())
        )),
        Some(g) if gateways.is_empty() => Err(format!(
            "the configuration says this host is gateway `{g}`, but the policy names no gateways ([site.gateways.*]): remove `gateway` from the configuration, or add the gateway to the policy"
        )),
        Some(g) => match gateways.get(g) {
            None => Err(format!(
                "the configuration says this host is gateway `{g}`, which the policy does not name (it names {})",
                quoted(&mut gateways.keys())
            )),
            Some(gw) if !gw.members.is_empty() && !gw.members.iter().any(|m| m == member) => {
                Err(format!(
                    "this host is `{member}`, which is not a member of gateway `{g}` (its members are {}): set `member` in the configuration, or list the host in the gateway's `members`",
                    quoted(&mut gw.members.iter())
                ))
            }
            Some(gw) => Ok(Some(gw)),
        },
    }
}

fn compile(
    dir: &std::path::Path,
    reloader: &Mutex<policy::incremental::Reloader>,
    id: (Option<&str>, &str),
    job: &Job,
) -> Result<Output, DaemonError> {
    let refused = |errors: String, unreadable: bool| DaemonError::Policy {
        dir: dir.to_path_buf(),
        errors,
        unreadable,
    };
    // A poisoned lock means an earlier compile panicked; its reloader state is only a cache
    // of the last good load, so carry on with it.
    let mut reloader = reloader
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = policy::windows::now();
    let (compiled, how) = reloader.load_at(now).map_err(|e| {
        let problems = e.problems();
        let unreadable = !problems.is_empty()
            && problems
                .iter()
                .all(|p| matches!(p, policy::Problem::Io { .. }));
        refused(e.render(), unreadable)
    })?;
    let sources = reloader.policy().map(|p| p.sources.clone());
    let schedule = reloader
        .policy()
        .map(|p| Schedule::of(p, reloader.windows().clone()))
        .unwrap_or_default();
    let compiled = match reloader.policy() {
        Some(p) => view(p, compiled, id).map_err(|e| refused(e, false))?,
        // Cannot happen after a successful load; a view needs the policy's gateways.
        None if id.0.is_none() => compiled,
        None => return Err(refused("the policy's gateways are unknown".into(), false)),
    };
    drop(reloader);
    let contents = compiled
        .map_contents(job.slot, job.generation, &job.ifindexes)
        .map_err(|e| refused(e.to_string(), false))?;
    let commit = super::watch::git_commit(dir);
    let in_force = InForce {
        sources: sources.clone().unwrap_or_default(),
        commit: commit.clone(),
        lkg: false,
        windows_closed: false,
    };
    Ok(Output {
        compiled,
        how,
        contents,
        commit,
        sources,
        schedule,
        in_force,
    })
}

/// Compiles `f` (the policy in force, or the last-known-good) as it stands now.
fn compile_in_force(
    dir: &std::path::Path,
    f: &InForce,
    id: (Option<&str>, &str),
    job: &Job,
) -> Result<Output, DaemonError> {
    let refused = |errors: String| DaemonError::Policy {
        dir: dir.to_path_buf(),
        errors,
        unreadable: false,
    };
    let policy =
        policy::parse_sources(f.sources.files().to_vec()).map_err(|e| refused(e.render()))?;
    let (compiled, open) = if f.windows_closed {
        (policy::compile(&policy), Default::default())
    } else {
        match policy::windows::compile_at(&policy, policy::windows::now()) {
            Ok((c, open)) => (Ok(c), open),
            Err(e) => (Err(e), Default::default()),
        }
    };
    let compiled = compiled.map_err(|e| refused(e.render()))?;
    let compiled = view(&policy, Arc::new(compiled), id).map_err(refused)?;
    let contents = compiled
        .map_contents(job.slot, job.generation, &job.ifindexes)
        .map_err(|e| refused(e.to_string()))?;
    Ok(Output {
        compiled,
        how: How::Full,
        contents,
        commit: f.commit.clone(),
        sources: (!f.lkg).then(|| f.sources.clone()),
        schedule: Schedule::of(&policy, open),
        in_force: InForce {
            windows_closed: false,
            ..f.clone()
        },
    })
}
