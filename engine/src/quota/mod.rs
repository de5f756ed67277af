//! Client quotas: how many bytes per second each principal may produce and
//! fetch, and the accounts that tell how long to hold an answer back so
//! that a principal over its quota is slowed down to it rather than failed
//! (as Kafka's client quotas do).
//!
//! The quotas live in the metadata store (`MetaStore::put_quota`) and are
//! mirrored here, so a request never touches the store: a principal's own
//! quota applies to it whole; the default quota to every principal
//! without one. Accounts exist only for principals with a rate in a
//! direction; with no quota set at all, charging a request reads one atomic
//! flag and takes no lock.
//!
//! Invariant: the accounts are bounded (`ACCOUNTS_MAX` principals per
//! direction); an account that has repaid its debt and refilled is
//! dropped whenever room is needed and at every sweep, which loses nothing
//! since a new one starts full.

mod account;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::Invalid;
use account::Account;
pub use account::{BURST, THROTTLE_MAX};

pub use crate::acl::ANONYMOUS;
/// The longest principal name a quota may be set for, in bytes.
pub const PRINCIPAL_BYTES_MAX: usize = 256;
/// Quotas the broker keeps (the default one included).
pub const QUOTAS_MAX: usize = 10_000;
/// Principals with an account, per direction. Beyond it the least recently
/// charged account is dropped (forgiving what it owed) once no full one is
/// left to drop.
pub const ACCOUNTS_MAX: usize = 10_000;

/// Whose quota: one principal's, or the default for principals without one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaTarget {
    /// For every principal without a quota of its own.
    Default,
    /// One principal, as authentication names it.
    Principal(String),
}

impl fmt::Display for QuotaTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("the default quota"),
            Self::Principal(name) => write!(f, "principal `{name}`"),
        }
    }
}

/// A quota's rates; `None` is no limit in that direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimits {
    /// Record batch bytes per second of produce requests.
    pub produce_bytes_per_second: Option<u64>,
    /// Record bytes per second returned by fetches and subscriptions.
    pub fetch_bytes_per_second: Option<u64>,
}

impl QuotaLimits {
    pub fn rate(&self, direction: Direction) -> Option<u64> {
        match direction {
            Direction::Produce => self.produce_bytes_per_second,
            Direction::Fetch => self.fetch_bytes_per_second,
        }
    }
}

/// Which way bytes go, each with its own quota and accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Produce,
    Fetch,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Produce => "produce",
            Self::Fetch => "fetch",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Produce => 0,
            Self::Fetch => 1,
        }
    }
}

/// Refuses a quota the broker would not enforce sensibly: a rate of 0
/// (nothing could pass), none at all (that is removing it), or a name no
/// principal can have.
pub(crate) fn check(target: &QuotaTarget, limits: &QuotaLimits) -> Result<(), Invalid> {
    if let QuotaTarget::Principal(name) = target {
        check_principal(name)?;
    }
    for (field, rate) in [
        ("produce_bytes_per_second", limits.produce_bytes_per_second),
        ("fetch_bytes_per_second", limits.fetch_bytes_per_second),
    ] {
        if rate == Some(0) {
            return Err(Invalid::new(
                field,
                "must be at least 1 byte per second; leave it unset for no limit",
            ));
        }
    }
    if limits.produce_bytes_per_second.is_none() && limits.fetch_bytes_per_second.is_none() {
        return Err(Invalid::new(
            "quota",
            "set produce_bytes_per_second, fetch_bytes_per_second or both (RemoveQuota lifts a quota)",
        ));
    }
    Ok(())
}

pub(crate) fn check_principal(name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > PRINCIPAL_BYTES_MAX {
        return Err(Invalid::new(
            "principal",
            format!(
                "must be 1 to {PRINCIPAL_BYTES_MAX} bytes, got {}",
                name.len()
            ),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Invalid::new(
            "principal",
            "must not hold control characters",
        ));
    }
    Ok(())
}

/// The quotas in force, mirroring the metadata store.
#[derive(Debug, Default)]
struct Book {
    default: Option<QuotaLimits>,
    principals: HashMap<String, QuotaLimits>,
}

impl Book {
    fn rate(&self, principal: &str, direction: Direction) -> Option<u64> {
        self.principals
            .get(principal)
            .or(self.default.as_ref())
            .and_then(|limits| limits.rate(direction))
    }

    fn len(&self) -> usize {
        self.principals.len() + usize::from(self.default.is_some())
    }
}

/// The quotas and the accounts that enforce them.
#[derive(Debug)]
pub(crate) struct Quotas {
    /// Whether any quota is set: read first on every request, so a broker
    /// without quotas takes no lock for them.
    any: AtomicBool,
    /// The quotas by target. Read per request while any is set; written
    /// by `set` and `remove`, which the broker's admin lock serializes.
    book: RwLock<Book>,
    /// Accounts by principal, one table per direction (so producing and
    /// fetching do not contend); held only to charge one request or sweep.
    accounts: [Mutex<Accounts>; 2],
}

impl Quotas {
    /// The quotas the metadata store holds.
    pub(crate) fn new(stored: Vec<(QuotaTarget, QuotaLimits)>) -> Self {
        let quotas = Self {
            any: AtomicBool::new(false),
            book: RwLock::new(Book::default()),
            accounts: [
                Mutex::new(Accounts::new(ACCOUNTS_MAX)),
                Mutex::new(Accounts::new(ACCOUNTS_MAX)),
            ],
        };
        for (target, limits) in stored {
            quotas.set(target, limits);
        }
        quotas
    }

    /// Charges `bytes` of a request to `principal`'s account, returning how
    /// long its answer must be held back (zero without a quota).
    pub(crate) fn charge(&self, principal: &str, direction: Direction, bytes: u64) -> Duration {
        self.charge_at(principal, direction, bytes, Instant::now())
    }

    fn charge_at(
        &self,
        principal: &str,
        direction: Direction,
        bytes: u64,
        now: Instant,
    ) -> Duration {
        if !self.any.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        let Some(rate) = self.book.read().rate(principal, direction) else {
            return Duration::ZERO;
        };
        self.accounts[direction.index()]
            .lock()
            .charge(principal, bytes, rate, now)
    }

    /// Every quota, the default first, then by principal.
    pub(crate) fn list(&self) -> Vec<(QuotaTarget, QuotaLimits)> {
        let book = self.book.read();
        let mut quotas: Vec<(QuotaTarget, QuotaLimits)> = book
            .default
            .map(|limits| (QuotaTarget::Default, limits))
            .into_iter()
            .chain(
                book.principals
                    .iter()
                    .map(|(name, limits)| (QuotaTarget::Principal(name.clone()), *limits)),
            )
            .collect();
        quotas.sort_by(|a, b| a.0.cmp(&b.0));
        quotas
    }

    pub(crate) fn get(&self, target: &QuotaTarget) -> Option<QuotaLimits> {
        let book = self.book.read();
        match target {
            QuotaTarget::Default => book.default,
            QuotaTarget::Principal(name) => book.principals.get(name).copied(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.book.read().len()
    }

    pub(crate) fn set(&self, target: QuotaTarget, limits: QuotaLimits) {
        let mut book = self.book.write();
        match target {
            QuotaTarget::Default => book.default = Some(limits),
            QuotaTarget::Principal(name) => {
                book.principals.insert(name, limits);
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// Whether there was such a quota.
    pub(crate) fn remove(&self, target: &QuotaTarget) -> bool {
        let mut book = self.book.write();
        let removed = match target {
            QuotaTarget::Default => book.default.take().is_some(),
            QuotaTarget::Principal(name) => book.principals.remove(name).is_some(),
        };
        self.any.store(book.len() > 0, Ordering::Release);
        removed
    }

    /// Drops the accounts that have repaid their debt and refilled.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        for accounts in &self.accounts {
            accounts.lock().drop_full(now);
        }
    }

    #[cfg(test)]
    fn accounts(&self, direction: Direction) -> usize {
        self.accounts[direction.index()].lock().by_principal.len()
    }
}

/// The accounts of one direction, bounded.
#[derive(Debug)]
struct Accounts {
    by_principal: HashMap<String, Account>,
    max: usize,
}

impl Accounts {
    fn new(max: usize) -> Self {
        assert!(max > 0, "room for one account at least");
        Self {
            by_principal: HashMap::new(),
            max,
        }
    }

    fn charge(&mut self, principal: &str, bytes: u64, rate: u64, now: Instant) -> Duration {
        if let Some(account) = self.by_principal.get_mut(principal) {
            return account.charge(bytes, rate, now);
        }
        if self.by_principal.len() >= self.max {
            self.make_room(now);
        }
        let mut account = Account::new(rate, now);
        let wait = account.charge(bytes, rate, now);
        self.by_principal.insert(principal.to_owned(), account);
        wait
    }

    /// Drops the full accounts or, with none, the least recently charged.
    fn make_room(&mut self, now: Instant) {
        self.drop_full(now);
        if self.by_principal.len() < self.max {
            return;
        }
        let oldest = self
            .by_principal
            .iter()
            .min_by_key(|(_, account)| account.last_charged)
            .map(|(name, _)| name.clone());
        if let Some(name) = oldest {
            tracing::debug!(principal = %name, "quota account dropped for room");
            self.by_principal.remove(&name);
        }
    }

    fn drop_full(&mut self, now: Instant) {
        self.by_principal.retain(|_, account| !account.is_full(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(produce: Option<u64>, fetch: Option<u64>) -> QuotaLimits {
        QuotaLimits {
            produce_bytes_per_second: produce,
            fetch_bytes_per_second: fetch,
        }
    }

    fn principal(name: &str) -> QuotaTarget {
        QuotaTarget::Principal(name.to_owned())
    }

    #[test]
    fn without_quotas_nothing_is_held_back_and_no_account_is_made() {
        let quotas = Quotas::new(Vec::new());
        let now = Instant::now();
        assert_eq!(
            quotas.charge_at("alice", Direction::Produce, u64::MAX, now),
            Duration::ZERO
        );
        assert_eq!(quotas.accounts(Direction::Produce), 0);
    }

    #[test]
    fn a_principals_own_quota_replaces_the_default_whole() {
        let quotas = Quotas::new(vec![
            (QuotaTarget::Default, limits(Some(1_000), Some(1_000))),
            (principal("alice"), limits(Some(1_000_000), None)),
        ]);
        let now = Instant::now();
        let big = 2_000_000;
        // Alice: her produce rate, and no fetch limit (not the default's).
        assert_eq!(
            quotas.charge_at("alice", Direction::Produce, big, now),
            Duration::from_secs_f64(1.9)
        );
        assert_eq!(
            quotas.charge_at("alice", Direction::Fetch, big, now),
            Duration::ZERO
        );
        // Bob has none of his own: the default, capped.
        assert_eq!(
            quotas.charge_at("bob", Direction::Fetch, big, now),
            THROTTLE_MAX
        );
        assert_eq!(quotas.accounts(Direction::Fetch), 1);
    }

    #[test]
    fn a_removed_quota_holds_nothing_back_from_the_next_request() {
        let quotas = Quotas::new(vec![(principal("alice"), limits(Some(1_000), None))]);
        let now = Instant::now();
        assert!(quotas.charge_at("alice", Direction::Produce, 10_000, now) > Duration::ZERO);
        assert!(quotas.remove(&principal("alice")));
        assert!(!quotas.remove(&principal("alice")));
        assert_eq!(
            quotas.charge_at("alice", Direction::Produce, 10_000, now),
            Duration::ZERO
        );
        assert!(quotas.list().is_empty());
    }

    #[test]
    fn quotas_are_listed_default_first_then_by_principal() {
        let quotas = Quotas::new(vec![
            (principal("carol"), limits(Some(1), None)),
            (QuotaTarget::Default, limits(None, Some(2))),
            (principal("alice"), limits(Some(3), None)),
        ]);
        let targets: Vec<QuotaTarget> = quotas.list().into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            targets,
            vec![QuotaTarget::Default, principal("alice"), principal("carol")]
        );
    }

    #[test]
    fn idle_accounts_are_dropped_once_they_have_refilled() {
        let quotas = Quotas::new(vec![(QuotaTarget::Default, limits(Some(1_000), None))]);
        let start = Instant::now();
        quotas.charge_at("alice", Direction::Produce, 1_100, start);
        quotas.charge_at("bob", Direction::Produce, 10, start);
        let mut accounts = quotas.accounts[0].lock();
        // Bob owes nothing and is full again 10 ms later; alice owes 1 s.
        accounts.drop_full(start + Duration::from_millis(500));
        assert_eq!(accounts.by_principal.len(), 1);
        assert!(accounts.by_principal.contains_key("alice"));
        accounts.drop_full(start + Duration::from_millis(1_100));
        assert!(accounts.by_principal.is_empty());
    }

    #[test]
    fn the_accounts_are_bounded_dropping_full_ones_then_the_least_recently_charged() {
        let mut accounts = Accounts::new(3);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // a and b owe a second each; c owes nothing.
        accounts.charge("a", 1_100, 1_000, at(0));
        accounts.charge("b", 1_100, 1_000, at(1));
        accounts.charge("c", 0, 1_000, at(2));
        // Room for d: c, full, goes.
        accounts.charge("d", 1_100, 1_000, at(3));
        let mut names: Vec<&str> = accounts.by_principal.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["a", "b", "d"]);
        // Room for e: nobody is full, so a, the least recently charged, goes.
        accounts.charge("b", 0, 1_000, at(4));
        accounts.charge("e", 1_100, 1_000, at(5));
        let mut names: Vec<&str> = accounts.by_principal.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["b", "d", "e"]);
        // Many principals never take more than the bound.
        for i in 0..100 {
            accounts.charge(&format!("p{i}"), 1_100, 1_000, at(6 + i));
            assert!(accounts.by_principal.len() <= 3);
        }
    }

    #[test]
    fn zero_rates_no_rates_and_bad_names_are_refused_naming_the_field() {
        let alice = principal("alice");
        assert_eq!(
            check(&alice, &limits(Some(0), Some(5))).unwrap_err().field,
            "produce_bytes_per_second"
        );
        assert_eq!(
            check(&alice, &limits(Some(5), Some(0))).unwrap_err().field,
            "fetch_bytes_per_second"
        );
        assert_eq!(
            check(&alice, &limits(None, None)).unwrap_err().field,
            "quota"
        );
        for bad in [String::new(), "x".repeat(257), "a\nb".to_owned()] {
            assert_eq!(
                check(&principal(&bad), &limits(Some(1), None))
                    .unwrap_err()
                    .field,
                "principal"
            );
        }
        assert!(check(&QuotaTarget::Default, &limits(None, Some(1))).is_ok());
        assert!(check(&principal(&"x".repeat(256)), &limits(Some(1), None)).is_ok());
    }
}
