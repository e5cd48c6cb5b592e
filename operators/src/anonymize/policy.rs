//! Per-class de-identification actions: what the anonymizer does with each identifier class of
//! 45 CFR 164.514(b)(2)(i), as a job file chooses them.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;
use vitalflow_model::clinical::IdClass;

/// An identifier class as job files and de-identification reports name it (dates are set by
/// the anonymizer's date policy, the patient id is always crypto-hashed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PhiClass {
    /// (A) Names of the patient.
    Name,
    /// (B) Street address, city and county.
    Address,
    /// (B) ZIP code.
    Zip,
    /// (C) Birth date.
    BirthDate,
    /// (D) Telephone numbers.
    Phone,
    /// (E) Fax numbers.
    Fax,
    /// (F) Email addresses.
    Email,
    /// (N) Web URLs.
    Url,
    /// (O) IP addresses.
    Ip,
    /// (G–M, P, R) Identifying numbers and codes.
    Id(IdClass),
    /// (Q) Photographs.
    Photo,
    /// Free-text notes, which may hold any of the above.
    FreeText,
}

/// What is done to a value of a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Removed.
    Redact,
    /// Replaced by a keyed HMAC-SHA256 (32 hex digits): linkable within the key, not reversible.
    CryptoHash,
    /// Kept as it is: the output is then **not** Safe Harbor de-identified.
    Keep,
    /// Generalized: birth date to its year (`90 or older` past 89), ZIP to ZIP3 (`000` for the
    /// restricted ZIP3s).
    Generalize,
    /// Free text removed.
    Drop,
    /// Free text kept with identifier patterns and the record's own identifying values replaced.
    Scrub,
}

impl Action {
    /// The name used in job files and reports.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Redact => "redact",
            Self::CryptoHash => "crypto-hash",
            Self::Keep => "keep",
            Self::Generalize => "generalize",
            Self::Drop => "drop",
            Self::Scrub => "scrub",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Redact,
            Self::CryptoHash,
            Self::Keep,
            Self::Generalize,
            Self::Drop,
            Self::Scrub,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

impl PhiClass {
    /// Every class, in a stable order.
    #[must_use]
    pub fn all() -> Vec<Self> {
        let mut all = vec![
            Self::Name,
            Self::Address,
            Self::Zip,
            Self::BirthDate,
            Self::Phone,
            Self::Fax,
            Self::Email,
            Self::Url,
            Self::Ip,
        ];
        all.extend(IdClass::ALL.map(Self::Id));
        all.extend([Self::Photo, Self::FreeText]);
        all
    }

    /// The name used in job files and reports.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Address => "address",
            Self::Zip => "zip",
            Self::BirthDate => "birth-date",
            Self::Phone => "phone",
            Self::Fax => "fax",
            Self::Email => "email",
            Self::Url => "url",
            Self::Ip => "ip",
            Self::Id(c) => c.as_str(),
            Self::Photo => "photo",
            Self::FreeText => "free-text",
        }
    }

    /// The actions a class allows; the first is the default (Safe Harbor's).
    #[must_use]
    pub const fn actions(self) -> &'static [Action] {
        use Action::{CryptoHash, Drop, Generalize, Keep, Redact, Scrub};
        match self {
            Self::Name | Self::Address | Self::Phone | Self::Fax | Self::Email | Self::Url => {
                &[Redact, Keep]
            }
            Self::Ip => &[Redact, Keep],
            Self::Zip | Self::BirthDate => &[Generalize, Redact, Keep],
            Self::Id(_) => &[Redact, CryptoHash, Keep],
            Self::Photo => &[Redact],
            Self::FreeText => &[Drop, Scrub],
        }
    }
}

impl fmt::Display for PhiClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job file's `actions` that cannot be used. Messages name classes and actions only.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// Not a class name.
    #[error("unknown identifier class `{0}` (expected one of: {1})")]
    UnknownClass(String, String),
    /// Not an action of the class.
    #[error("`{class}` cannot be `{action}` (expected one of: {allowed})")]
    Action {
        /// The class.
        class: String,
        /// The action given.
        action: String,
        /// The class's actions.
        allowed: String,
    },
}

/// The action of every class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    actions: BTreeMap<PhiClass, Action>,
}

impl Default for Policy {
    /// Safe Harbor: the first action of every class.
    fn default() -> Self {
        Self {
            actions: PhiClass::all()
                .into_iter()
                .map(|c| (c, c.actions()[0]))
                .collect(),
        }
    }
}

impl Policy {
    /// The default policy with `overrides` (class name → action name) applied.
    ///
    /// # Errors
    /// [`PolicyError`] for an unknown class, or an action the class does not allow.
    pub fn with<'a>(
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, PolicyError> {
        let mut policy = Self::default();
        for (class_name, action_name) in overrides {
            let class = PhiClass::all()
                .into_iter()
                .find(|c| c.as_str() == class_name)
                .ok_or_else(|| {
                    let names: Vec<&str> = PhiClass::all().iter().map(|c| c.as_str()).collect();
                    PolicyError::UnknownClass(class_name.to_owned(), names.join(", "))
                })?;
            let action = Action::parse(action_name)
                .filter(|a| class.actions().contains(a))
                .ok_or_else(|| PolicyError::Action {
                    class: class_name.to_owned(),
                    action: action_name.to_owned(),
                    allowed: class
                        .actions()
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            policy.actions.insert(class, action);
        }
        Ok(policy)
    }

    /// The action of `class`.
    #[must_use]
    pub fn action(&self, class: PhiClass) -> Action {
        self.actions
            .get(&class)
            .copied()
            .unwrap_or(class.actions()[0])
    }

    /// The classes whose action is `keep`: with any, the output is not Safe Harbor
    /// de-identified.
    #[must_use]
    pub fn kept(&self) -> Vec<PhiClass> {
        self.actions
            .iter()
            .filter(|(_, a)| **a == Action::Keep)
            .map(|(c, _)| *c)
            .collect()
    }
}
