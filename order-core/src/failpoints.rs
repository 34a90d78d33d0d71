//! Fail points for tests (feature `failpoints`, off by default): named places in the use
//! cases where a test or a fault-injection suite makes the process die, stall or panic
//! at an exact moment of the delivery protocol.
//!
//! The points, in the order an order meets them:
//! - `after_commit_before_enqueue` — `create_order`: the order is committed, its job
//!   not yet enqueued (a crash here leaves it to the reconciler);
//! - `after_start` — `process_order`: the Pending→Processing (or take-over) transition
//!   was applied, nothing charged yet;
//! - `after_charge` — `process_order`: the payment provider answered, the final
//!   Pay/Fail transition not yet made;
//! - `before_ack` — `handle_delivery` (the worker loop): the order is finished, its
//!   delivery not yet acknowledged.
//!
//! Actions, each optionally prefixed by a count `N*` (fire N times, then off), as in the
//! `fail` crate: `off`; `abort` — the process dies on the spot as under `kill -9`
//! ([`std::process::abort`]: no destructor runs, no buffer is flushed, no lock or lease
//! is given back — that is the point); `exit(N)` — [`std::process::exit`] with code N,
//! without unwinding any task; `sleep(MS)` — the use case waits MS milliseconds on the
//! service's `Clock` (the points are in async code: a blocking sleep would stall the
//! executor thread, and a manual clock would not govern it); `panic` — the use case
//! panics (in a test, the task dies and the test observes what it left behind).
//!
//! Arming: tests call [`arm`], [`arm_from_spec`] and [`disarm_all`] and read [`hits`].
//! This crate never reads the environment: the `server` and `worker` binaries, built
//! with the facade's `failpoints` feature, read `ORDERS_FAILPOINTS` (a spec such as
//! `after_start=abort;before_ack=2*exit(3)`) once at start and arm from it; without
//! the feature a set `ORDERS_FAILPOINTS` is an error. Release builds have the feature
//! off, so a call site compiles to nothing; with it on, a call site costs one relaxed
//! atomic load while nothing is armed.
//!
//! The registry is process-global: tests that arm points must not run concurrently
//! with each other (serialise them and disarm when done).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The name of every fail point, in the order an order meets them.
pub const NAMES: [&str; 4] = [
    "after_commit_before_enqueue",
    "after_start",
    "after_charge",
    "before_ack",
];

/// What an armed fail point does when execution reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing: arming a point with `Off` disarms it.
    Off,
    /// [`std::process::abort`]: the process dies as under `kill -9` — no destructor,
    /// no flush, no unwinding.
    Abort,
    /// [`std::process::exit`] with this code: no task is unwound.
    Exit(i32),
    /// The use case waits this long on the service's `Clock`, then goes on.
    Sleep(Duration),
    /// The use case panics with a message naming the point.
    Panic,
}

/// An [`Action`] and how many more times it fires (`None`: every time until disarmed).
/// Parses from the spec syntax `[N*]action`: `abort`, `2*exit(3)`, `sleep(500)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    action: Action,
    remaining: Option<u64>,
}

impl Trigger {
    /// `action` every time the point is reached, until disarmed.
    pub fn always(action: Action) -> Self {
        Self {
            action,
            remaining: None,
        }
    }

    /// `action` the next `times` times the point is reached, then off (`times == 0`
    /// is off).
    pub fn times(times: u64, action: Action) -> Self {
        Self {
            action,
            remaining: Some(times),
        }
    }

    /// What this trigger does when it fires.
    pub fn action(&self) -> Action {
        self.action
    }

    /// How many more times it fires; `None`: every time.
    pub fn remaining(&self) -> Option<u64> {
        self.remaining
    }

    /// Whether arming with this trigger leaves the point disarmed.
    fn is_off(&self) -> bool {
        self.action == Action::Off || self.remaining == Some(0)
    }
}

impl From<Action> for Trigger {
    fn from(action: Action) -> Self {
        Self::always(action)
    }
}

impl FromStr for Trigger {
    type Err = BadAction;

    /// Parses `[N*]off|abort|panic|exit(N)|sleep(MS)`, surrounding spaces allowed.
    ///
    /// # Errors
    /// [`BadAction`] naming the action and what is wrong with it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| BadAction {
            action: s.trim().to_owned(),
            reason,
        };
        let (count, rest) = match s.split_once('*') {
            Some((n, rest)) => {
                let n: u64 = n
                    .trim()
                    .parse()
                    .map_err(|_| bad("the count before `*` is not a whole number"))?;
                if n == 0 {
                    return Err(bad("the count before `*` must be at least 1"));
                }
                (Some(n), rest.trim())
            }
            None => (None, s.trim()),
        };
        let (word, arg) = match rest.split_once('(') {
            Some((word, tail)) => {
                let arg = tail
                    .strip_suffix(')')
                    .ok_or_else(|| bad("missing closing `)`"))?;
                (word.trim(), Some(arg.trim()))
            }
            None => (rest, None),
        };
        let action = match (word, arg) {
            ("off", None) => Action::Off,
            ("abort", None) => Action::Abort,
            ("panic", None) => Action::Panic,
            ("exit", Some(code)) => Action::Exit(
                code.parse()
                    .map_err(|_| bad("exit(N) takes a whole-number exit code"))?,
            ),
            ("sleep", Some(ms)) => Action::Sleep(Duration::from_millis(
                ms.parse()
                    .map_err(|_| bad("sleep(MS) takes whole milliseconds"))?,
            )),
            ("exit", None) => return Err(bad("exit needs a code: exit(N)")),
            ("sleep", None) => return Err(bad("sleep needs milliseconds: sleep(MS)")),
            ("off" | "abort" | "panic", Some(_)) => {
                return Err(bad("off, abort and panic take no argument"));
            }
            _ => {
                return Err(bad(
                    "expected off, abort, panic, exit(N) or sleep(MS), optionally after N*",
                ));
            }
        };
        Ok(Self {
            action,
            remaining: count,
        })
    }
}

/// A fail point name that is not one of [`NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown fail point `{name}` (the fail points: after_commit_before_enqueue, after_start, after_charge, before_ack)"
)]
pub struct UnknownPoint {
    /// The name given.
    pub name: String,
}

/// An action that is not `[N*]off|abort|panic|exit(N)|sleep(MS)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad fail point action `{action}`: {reason}")]
pub struct BadAction {
    /// The action given.
    pub action: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// What is wrong with a spec given to [`arm_from_spec`]; every variant names the bad
/// part (`NAME=ACTION`) and says why, in its own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The part has no `=`.
    #[error("fail point spec part `{part}` is not NAME=ACTION")]
    NotAnAssignment {
        /// The bad part.
        part: String,
    },
    /// The part names no fail point.
    #[error("fail point spec part `{part}`: {error}")]
    UnknownPoint {
        /// The bad part.
        part: String,
        /// The unknown name.
        error: UnknownPoint,
    },
    /// The part's action does not parse.
    #[error("fail point spec part `{part}`: {error}")]
    BadAction {
        /// The bad part.
        part: String,
        /// What is wrong with the action.
        error: BadAction,
    },
    /// The part arms a point an earlier part of the same spec already armed.
    #[error("fail point spec part `{part}`: `{name}` is armed twice in one spec")]
    Repeated {
        /// The bad part.
        part: String,
        /// The point named twice.
        name: &'static str,
    },
}

/// The process's fail points: what every call site consults.
static GLOBAL: Registry = Registry::new();

/// Every point's trigger and hit count. One lock for all, so `any_armed` is recomputed
/// atomically with each change.
struct Registry {
    /// Whether any point is armed: the one relaxed load a call site pays when none is.
    /// Written only under `state`'s lock, so it agrees with the state once that lock is
    /// released.
    any_armed: AtomicBool,
    state: Mutex<State>,
}

/// Indexed as [`NAMES`].
struct State {
    armed: [Option<Trigger>; NAMES.len()],
    hits: [u64; NAMES.len()],
}

impl Registry {
    const fn new() -> Self {
        Self {
            any_armed: AtomicBool::new(false),
            state: Mutex::new(State {
                armed: [None; NAMES.len()],
                hits: [0; NAMES.len()],
            }),
        }
    }

    /// The state. A panic while it is held cannot leave it half-written (every change
    /// is a single assignment), so a poisoned lock is taken as is.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sync_any_armed(&self, state: &State) {
        let any = state.armed.iter().any(Option::is_some);
        self.any_armed.store(any, Ordering::Relaxed);
    }

    /// Arms each (point index, trigger), all under one lock.
    fn set(&self, triggers: &[(usize, Trigger)]) {
        let mut state = self.state();
        for &(i, trigger) in triggers {
            state.armed[i] = (!trigger.is_off()).then_some(trigger);
        }
        self.sync_any_armed(&state);
    }

    fn disarm_all(&self) {
        let mut state = self.state();
        state.armed = [None; NAMES.len()];
        state.hits = [0; NAMES.len()];
        self.sync_any_armed(&state);
    }

    fn hits(&self, i: usize) -> u64 {
        self.state().hits[i]
    }

    /// Takes one firing of `name`'s trigger, if armed: counts the hit and the remaining
    /// fires (disarming it after the last). Nothing but one relaxed load while no point
    /// is armed. The lock is released before the caller acts, so a panicking point never
    /// poisons it.
    fn fire(&self, name: &str) -> Option<Action> {
        if !self.any_armed.load(Ordering::Relaxed) {
            return None;
        }
        let i = index_of(name)?;
        let mut state = self.state();
        let trigger = state.armed[i].as_mut()?;
        let action = trigger.action;
        if let Some(n) = trigger.remaining.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.armed[i] = None;
                self.sync_any_armed(&state);
            }
        }
        state.hits[i] += 1;
        Some(action)
    }
}

fn index_of(name: &str) -> Option<usize> {
    NAMES.iter().position(|n| *n == name)
}

/// Arms the point `name` with `trigger` (an [`Action`] or a [`Trigger`]), replacing
/// what it was armed with; [`Action::Off`] (or a count of 0) disarms it. Its hit count
/// is kept.
///
/// # Errors
/// [`UnknownPoint`] when `name` is not one of [`NAMES`]; nothing is armed.
pub fn arm(name: &str, trigger: impl Into<Trigger>) -> Result<(), UnknownPoint> {
    let i = index_of(name).ok_or_else(|| UnknownPoint {
        name: name.to_owned(),
    })?;
    GLOBAL.set(&[(i, trigger.into())]);
    Ok(())
}

/// Arms every point a spec names: `NAME=[N*]ACTION` parts separated by `;`, e.g.
/// `after_start=abort;before_ack=2*exit(3)`. Spaces around parts are ignored, and so
/// are empty parts (an empty spec arms nothing). Points the spec does not name are left
/// as they are. The whole spec is checked before anything is armed.
///
/// # Errors
/// [`SpecError`] naming the first bad part; nothing is armed.
pub fn arm_from_spec(spec: &str) -> Result<(), SpecError> {
    GLOBAL.set(&parse_spec(spec)?);
    Ok(())
}

/// The (point index, trigger) pairs of a spec, in order.
fn parse_spec(spec: &str) -> Result<Vec<(usize, Trigger)>, SpecError> {
    let mut parsed: Vec<(usize, Trigger)> = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, action)) = part.split_once('=') else {
            return Err(SpecError::NotAnAssignment {
                part: part.to_owned(),
            });
        };
        let name = name.trim();
        let i = index_of(name).ok_or_else(|| SpecError::UnknownPoint {
            part: part.to_owned(),
            error: UnknownPoint {
                name: name.to_owned(),
            },
        })?;
        if parsed.iter().any(|(seen, _)| *seen == i) {
            return Err(SpecError::Repeated {
                part: part.to_owned(),
                name: NAMES[i],
            });
        }
        let trigger = action.parse().map_err(|error| SpecError::BadAction {
            part: part.to_owned(),
            error,
        })?;
        parsed.push((i, trigger));
    }
    Ok(parsed)
}

/// Disarms every point and resets every hit count.
pub fn disarm_all() {
    GLOBAL.disarm_all();
}

/// How many times the point `name` fired an action since the process started or the
/// last [`disarm_all`]; 0 for an unknown name. Reaching a disarmed point is no hit.
pub fn hits(name: &str) -> u64 {
    index_of(name).map_or(0, |i| GLOBAL.hits(i))
}

/// What the `fail_point!` macro runs at a call site: nothing (one relaxed load) while no
/// point is armed; otherwise the point's action. Returns how long the caller must sleep
/// on its clock for [`Action::Sleep`], `None` to go on at once; never returns for
/// `abort` and `exit`, and panics for `panic`.
pub(crate) fn eval(name: &str) -> Option<Duration> {
    let action = GLOBAL.fire(name)?;
    tracing::warn!(fail_point = name, ?action, "fail point fired");
    match action {
        Action::Off => None,
        Action::Abort => std::process::abort(),
        Action::Exit(code) => std::process::exit(code),
        Action::Sleep(d) => Some(d),
        Action::Panic => panic!("fail point `{name}` fired"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Trigger, BadAction> {
        s.parse()
    }

    #[test]
    fn every_action_parses_with_and_without_a_count() {
        assert_eq!(parse("off"), Ok(Trigger::always(Action::Off)));
        assert_eq!(parse(" abort "), Ok(Trigger::always(Action::Abort)));
        assert_eq!(parse("panic"), Ok(Trigger::always(Action::Panic)));
        assert_eq!(parse("exit(3)"), Ok(Trigger::always(Action::Exit(3))));
        assert_eq!(
            parse("sleep(250)"),
            Ok(Trigger::always(Action::Sleep(Duration::from_millis(250))))
        );
        assert_eq!(parse("2*exit(3)"), Ok(Trigger::times(2, Action::Exit(3))));
        assert_eq!(parse("1 * panic"), Ok(Trigger::times(1, Action::Panic)));
        assert_eq!(
            parse("5*sleep( 10 )"),
            Ok(Trigger::times(5, Action::Sleep(Duration::from_millis(10))))
        );
    }

    #[test]
    fn a_bad_action_is_refused_with_the_reason() {
        for bad in [
            "",
            "boom",
            "exit",
            "exit(x)",
            "exit(3",
            "sleep",
            "sleep(-1)",
            "panic(1)",
            "0*abort",
            "x*abort",
            "2*",
        ] {
            let err = parse(bad).expect_err(bad);
            assert_eq!(err.action, bad.trim(), "{err}");
        }
    }

    #[test]
    fn a_good_spec_parses_every_part_in_order() {
        let parsed = parse_spec(" after_start=abort; before_ack = 2*exit(3) ;;").unwrap();
        assert_eq!(
            parsed,
            vec![
                (1, Trigger::always(Action::Abort)),
                (3, Trigger::times(2, Action::Exit(3))),
            ]
        );
        assert_eq!(parse_spec("").unwrap(), vec![]);
        assert_eq!(parse_spec(" ; ").unwrap(), vec![]);
    }

    #[test]
    fn a_bad_spec_names_the_bad_part() {
        let err = parse_spec("after_start=abort;after_strat=panic").unwrap_err();
        assert!(
            matches!(&err, SpecError::UnknownPoint { part, error }
                if part == "after_strat=panic" && error.name == "after_strat"),
            "{err:?}"
        );
        assert!(err.to_string().contains("`after_strat=panic`"), "{err}");

        let err = parse_spec("after_start=abort;before_ack").unwrap_err();
        assert_eq!(
            err,
            SpecError::NotAnAssignment {
                part: "before_ack".to_owned()
            }
        );

        let err = parse_spec("after_charge=exit(x)").unwrap_err();
        assert!(
            matches!(&err, SpecError::BadAction { part, error }
                if part == "after_charge=exit(x)" && error.action == "exit(x)"),
            "{err:?}"
        );
        assert!(err.to_string().contains("whole-number exit code"), "{err}");

        let err = parse_spec("before_ack=panic;before_ack=off").unwrap_err();
        assert!(
            matches!(&err, SpecError::Repeated { part, name }
                if part == "before_ack=off" && *name == "before_ack"),
            "{err:?}"
        );
    }

    // A registry of its own: the process's one is shared with every other test of this
    // binary that runs a use case, and arming it here could stall or kill them.
    #[test]
    fn counted_triggers_fire_then_turn_off_and_disarm_all_resets_the_counts() {
        let r = Registry::new();
        assert_eq!(r.fire("after_start"), None, "nothing armed");
        assert_eq!(r.hits(1), 0);

        let nap = Action::Sleep(Duration::from_millis(7));
        r.set(&[(1, Trigger::times(2, nap))]);
        assert_eq!(r.fire("after_charge"), None, "another point stays quiet");
        assert_eq!(r.fire("after_start"), Some(nap));
        assert_eq!(r.fire("after_start"), Some(nap));
        assert_eq!(r.fire("after_start"), None, "off after two fires");
        assert_eq!(r.hits(1), 2);
        assert!(
            !r.any_armed.load(Ordering::Relaxed),
            "the fast path is back"
        );

        r.set(&[(2, Trigger::always(Action::Panic))]);
        assert!(r.any_armed.load(Ordering::Relaxed));
        r.set(&[(2, Trigger::always(Action::Off))]);
        assert_eq!(r.fire("after_charge"), None, "arming off disarms");
        assert!(!r.any_armed.load(Ordering::Relaxed));

        r.set(&[(3, Trigger::always(Action::Exit(3)))]);
        assert_eq!(r.fire("before_ack"), Some(Action::Exit(3)));
        r.disarm_all();
        assert_eq!(r.fire("before_ack"), None);
        assert_eq!(
            (r.hits(1), r.hits(3)),
            (0, 0),
            "disarm_all resets the counts"
        );
    }

    #[test]
    fn an_unknown_name_or_a_bad_spec_arms_nothing() {
        assert_eq!(
            arm("after_strat", Action::Panic),
            Err(UnknownPoint {
                name: "after_strat".to_owned()
            })
        );
        // Checked whole before anything is armed: the good first part is not armed.
        assert!(arm_from_spec("after_charge=panic;before_ack=nope").is_err());
        assert_eq!(hits("after_strat"), 0);
    }
}
