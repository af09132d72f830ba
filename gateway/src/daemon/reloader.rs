//! Which generation enforces, which comes next, and the reloads asked for meanwhile.
//!
//! Pure: the controller asks ([`Reloader::ask`]) and is told whether to start a compile now
//! or later; it reports each outcome ([`Reloader::compiled`], [`Reloader::enforcing`],
//! [`Reloader::refused`]) and then takes the reload asked for while the last one ran
//! ([`Reloader::take_pending`]). The
//! compile, the install and their I/O are the controller's. Unit-tested without root: a
//! refused reload leaves the enforcing generation and commit as they were, however many
//! reloads are asked for while one runs they make one more, and numbering never restarts
//! below a generation a previous run enforced.
//!
//! `S` is what an install carries between its two halves (the controller's staged
//! generation; `()` in tests).

/// What [`Reloader::ask`] says to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Compile now, as this generation.
    Start { generation: u64 },
    /// Another reload runs: this one runs after it (as one, however many were asked for).
    Queued,
    /// `lazaret detach --force` stood the daemon down: nothing is installed until restart.
    StoodDown,
}

/// The reload state of the controller.
#[derive(Debug)]
pub struct Reloader<S> {
    generation: u64,
    /// The last generation a previous run enforced, as the state directory recorded it: the
    /// next one is numbered above it even when nothing is pinned (a reboot, or nftables).
    /// nftables stamps the generation in each connection's mark, so numbering must never
    /// restart below it: a connection stamped by an old generation would pass as judged by
    /// the new one.
    numbered_from: u64,
    commit: Option<String>,
    /// The trigger of the reload compiling now.
    compiling: Option<String>,
    /// A generation half installed (its XDP slot being written), with its trigger.
    installing: Option<(String, S)>,
    /// The trigger of a reload asked for while another ran.
    pending: Option<String>,
    last_error: Option<String>,
    stood_down: bool,
}

impl<S> Reloader<S> {
    /// Nothing enforcing yet (or nothing known about it); the numbering continues above
    /// `numbered_from`.
    pub fn new(numbered_from: u64) -> Reloader<S> {
        Reloader {
            generation: 0,
            numbered_from,
            commit: None,
            compiling: None,
            installing: None,
            pending: None,
            last_error: None,
            stood_down: false,
        }
    }

    /// A generation found enforcing at start (pinned maps, an older ABI's maps, or the
    /// nftables table an earlier run left): kept until the first install replaces it.
    pub fn adopt(&mut self, generation: u64) {
        self.generation = self.generation.max(generation);
    }

    /// The enforcing generation (0: none).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The enforcing generation's commit, if its policy came from a git checkout.
    pub fn commit(&self) -> Option<&str> {
        self.commit.as_deref()
    }

    /// The last reload's error, while the generation before it keeps enforcing.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The number the next generation gets: above everything enforced, in this run or the
    /// ones before.
    pub fn next_generation(&self) -> u64 {
        self.generation.max(self.numbered_from) + 1
    }

    /// A reload is asked for (`why`). [`Ask::Start`] means the controller compiles now and
    /// reports with [`Self::compiled`] (or [`Self::refused`]).
    pub fn ask(&mut self, why: &str) -> Ask {
        if self.stood_down {
            return Ask::StoodDown;
        }
        if self.compiling.is_some() || self.installing.is_some() {
            self.pending = Some(why.to_string());
            return Ask::Queued;
        }
        self.compiling = Some(why.to_string());
        Ask::Start {
            generation: self.next_generation(),
        }
    }

    /// The compile finished and its first half of an install (`staged`) is under way; the
    /// second half waits for [`Self::take_staged`]. Dropped when stood down meanwhile.
    pub fn compiled(&mut self, staged: S) {
        let why = self.compiling.take().unwrap_or_default();
        if !self.stood_down {
            self.installing = Some((why, staged));
        }
    }

    /// `generation` failed to install after a dataplane may already have enforced it
    /// (nftables swaps its table before XDP writes its slot): that number is never given
    /// again, so nothing stamped with it passes as judged by a later generation.
    pub fn burn(&mut self, generation: u64) {
        self.numbered_from = self.numbered_from.max(generation);
    }

    /// The staged install, with its trigger, once it is ready to be switched to.
    pub fn take_staged(&mut self) -> Option<(String, S)> {
        self.installing.take()
    }

    /// `generation` enforces now.
    pub fn enforcing(&mut self, generation: u64, commit: Option<String>) {
        self.generation = generation;
        self.commit = commit;
        self.last_error = None;
        self.compiling = None;
        self.installing = None;
    }

    /// The reload failed (`error`): the enforcing generation is unchanged.
    pub fn refused(&mut self, error: String) {
        self.last_error = Some(error);
        self.compiling = None;
        self.installing = None;
    }

    /// The trigger of a reload asked for while the last one ran, once none runs: to ask for
    /// now.
    pub fn take_pending(&mut self) -> Option<String> {
        if self.compiling.is_some() || self.installing.is_some() {
            return None;
        }
        self.pending.take()
    }

    /// Stops installing anything until the daemon restarts; a half-done install is dropped,
    /// and so is one whose compile finishes later.
    pub fn stand_down(&mut self) {
        self.stood_down = true;
        self.installing = None;
        self.pending = None;
    }

    /// A reload is compiling or installing.
    pub fn busy(&self) -> bool {
        self.compiling.is_some() || self.installing.is_some()
    }

    pub fn stood_down(&self) -> bool {
        self.stood_down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload that compiles and installs.
    fn succeed(r: &mut Reloader<()>, why: &str, commit: &str) -> (u64, Option<String>) {
        let Ask::Start { generation } = r.ask(why) else {
            panic!("{why} did not start");
        };
        r.compiled(());
        let (trigger, ()) = r.take_staged().expect("staged");
        assert_eq!(trigger, why);
        r.enforcing(generation, Some(commit.into()));
        (generation, r.take_pending())
    }

    #[test]
    fn a_refused_reload_keeps_the_enforcing_generation_and_says_why() {
        let mut r = Reloader::<()>::new(0);
        assert_eq!(succeed(&mut r, "start", "c1"), (1, None));
        assert_eq!(r.ask("edit"), Ask::Start { generation: 2 });
        r.refused("rules.toml:3:7: unknown role".into());
        assert_eq!((r.generation(), r.commit()), (1, Some("c1")));
        assert_eq!(r.last_error(), Some("rules.toml:3:7: unknown role"));
        // A failed install (after the compile) is refused the same way.
        assert_eq!(r.ask("edit"), Ask::Start { generation: 2 });
        r.compiled(());
        r.refused("nft refused the table".into());
        assert_eq!((r.generation(), r.commit()), (1, Some("c1")));
        // The next good one clears the error and takes the number the refused one had.
        assert_eq!(succeed(&mut r, "fix", "c2"), (2, None));
        assert_eq!((r.generation(), r.last_error()), (2, None));
    }

    #[test]
    fn reloads_asked_for_while_one_runs_make_one_more() {
        let mut r = Reloader::<()>::new(0);
        assert_eq!(r.ask("SIGHUP"), Ask::Start { generation: 1 });
        assert_eq!(r.ask("edit 1"), Ask::Queued);
        r.compiled(());
        assert_eq!(r.ask("edit 2"), Ask::Queued, "queued while installing too");
        assert_eq!(r.take_pending(), None, "not while one runs");
        r.take_staged();
        r.enforcing(1, None);
        let next = r.take_pending().expect("the queued reload");
        assert_eq!(next, "edit 2", "the latest trigger, once");
        assert_eq!(r.ask(&next), Ask::Start { generation: 2 });
        r.refused("x".into());
        assert_eq!(r.take_pending(), None, "nothing left queued");
    }

    #[test]
    fn numbering_continues_above_what_earlier_runs_enforced() {
        // A reboot: nothing pinned, but the state directory says generation 41 enforced.
        let mut r = Reloader::<()>::new(41);
        assert_eq!(r.generation(), 0);
        assert_eq!(r.ask("start"), Ask::Start { generation: 42 });
        r.refused("broken".into());
        // A restart adopting pinned maps at generation 50.
        let mut r = Reloader::<()>::new(41);
        r.adopt(50);
        assert_eq!(r.generation(), 50, "the adopted generation enforces");
        assert_eq!(r.ask("start"), Ask::Start { generation: 51 });
    }

    #[test]
    fn a_generation_that_failed_after_a_dataplane_enforced_it_is_never_numbered_again() {
        let mut r = Reloader::<()>::new(0);
        succeed(&mut r, "start", "c1");
        assert_eq!(r.ask("edit"), Ask::Start { generation: 2 });
        r.compiled(());
        r.burn(2);
        r.refused("XDP refused the slot".into());
        assert_eq!(r.generation(), 1, "generation 1 still enforces");
        assert_eq!(r.ask("retry"), Ask::Start { generation: 3 });
        // A compile that fails burns nothing: no dataplane saw it.
        r.refused("rules.toml:1:1".into());
        assert_eq!(r.ask("fix"), Ask::Start { generation: 3 });
    }

    #[test]
    fn standing_down_while_compiling_drops_the_compiled_generation() {
        let mut r = Reloader::<()>::new(0);
        succeed(&mut r, "start", "c1");
        assert_eq!(r.ask("edit"), Ask::Start { generation: 2 });
        r.stand_down();
        r.compiled(());
        assert!(r.take_staged().is_none(), "never switched to");
    }

    #[test]
    fn standing_down_refuses_every_reload_and_drops_a_half_done_install() {
        let mut r = Reloader::<()>::new(0);
        succeed(&mut r, "start", "c1");
        assert_eq!(r.ask("edit"), Ask::Start { generation: 2 });
        r.compiled(());
        r.stand_down();
        assert!(
            r.take_staged().is_none(),
            "the staged generation is never switched to"
        );
        assert_eq!(r.ask("SIGHUP"), Ask::StoodDown);
        assert_eq!(r.generation(), 1);
    }
}
