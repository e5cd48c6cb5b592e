//! Synthetic patient identities (the PHI the anonymization stage must remove).
//!
//! Identifiers (patient id, phone, SSN, MRN, email) are bijections of the patient index, so no
//! two patients share one and a scan of outputs for them is meaningful. Names are at least five
//! letters long and appear in no FHIR code, display or column name.

use chrono::{Datelike, Days, NaiveDate};

use super::physiology::{HashRng, splitmix64, stream};

/// Male given names.
const MALE: [&str; 30] = [
    "Jonathan",
    "Michael",
    "William",
    "Richard",
    "Charles",
    "Anthony",
    "Matthew",
    "Christopher",
    "Benjamin",
    "Nicholas",
    "Zachary",
    "Gregory",
    "Timothy",
    "Raymond",
    "Lawrence",
    "Vincent",
    "Harold",
    "Douglas",
    "Frederick",
    "Theodore",
    "Leonard",
    "Marcus",
    "Santiago",
    "Alejandro",
    "Dmitri",
    "Tobias",
    "Gabriel",
    "Emmanuel",
    "Winston",
    "Kenneth",
];

/// Female given names.
const FEMALE: [&str; 30] = [
    "Margaret",
    "Elizabeth",
    "Jennifer",
    "Patricia",
    "Catherine",
    "Rebecca",
    "Samantha",
    "Victoria",
    "Natalie",
    "Gabriela",
    "Isabella",
    "Charlotte",
    "Josephine",
    "Beatrice",
    "Eleanor",
    "Harriet",
    "Florence",
    "Rosalind",
    "Dorothy",
    "Genevieve",
    "Valentina",
    "Yasmine",
    "Ingrid",
    "Mariana",
    "Lucinda",
    "Theresa",
    "Veronica",
    "Adriana",
    "Francesca",
    "Giselle",
];

/// Family names.
const FAMILY: [&str; 60] = [
    "Whitfield",
    "Hernandez",
    "Kowalski",
    "Thompson",
    "Nakamura",
    "Okonkwo",
    "Fitzgerald",
    "Castellano",
    "Lindqvist",
    "Abernathy",
    "Blackwood",
    "Carmichael",
    "Delacroix",
    "Eriksson",
    "Fairbanks",
    "Gallagher",
    "Hollister",
    "Iversen",
    "Jablonski",
    "Kingsley",
    "Lancaster",
    "Montgomery",
    "Northcott",
    "Oyelaran",
    "Pemberton",
    "Quintero",
    "Rasmussen",
    "Schneider",
    "Takahashi",
    "Underwood",
    "Valenzuela",
    "Wainwright",
    "Yamamoto",
    "Zimmerman",
    "Archuleta",
    "Bhattacharya",
    "Chamberlain",
    "Donnelly",
    "Ellsworth",
    "Fernandez",
    "Gutierrez",
    "Hawthorne",
    "Jorgensen",
    "Kaczmarek",
    "Lockhart",
    "McAllister",
    "Villanueva",
    "Prescott",
    "Radcliffe",
    "Sorensen",
    "Thornton",
    "Vasquez",
    "Whitaker",
    "Youngblood",
    "Zelinski",
    "Ashworth",
    "Brennan",
    "Castillo",
    "Dubois",
    "Oakley",
];

/// Street names (a house number is put in front).
const STREETS: [&str; 30] = [
    "Maple Street",
    "Oak Avenue",
    "Cedar Lane",
    "Pine Street",
    "Elm Street",
    "Willow Drive",
    "Birch Road",
    "Chestnut Street",
    "Walnut Avenue",
    "Spruce Court",
    "Magnolia Boulevard",
    "Sycamore Lane",
    "Hickory Road",
    "Juniper Way",
    "Laurel Drive",
    "Aspen Court",
    "Cypress Avenue",
    "Poplar Street",
    "Dogwood Lane",
    "Redwood Drive",
    "Lakeview Terrace",
    "Hillcrest Road",
    "Riverside Drive",
    "Sunset Boulevard",
    "Meadow Lane",
    "Orchard Street",
    "Highland Avenue",
    "Harbor View Road",
    "Mill Pond Road",
    "Quail Hollow Court",
];

/// City, state and ZIP3. Five are restricted ZIP3s (fewer than 20,000 people: Safe Harbor
/// replaces them with `000`): 036, 556, 692, 878, 884.
const PLACES: [(&str, &str, &str); 30] = [
    ("Boston", "MA", "021"),
    ("Springfield", "IL", "627"),
    ("Columbus", "OH", "432"),
    ("Denver", "CO", "802"),
    ("Seattle", "WA", "981"),
    ("Portland", "OR", "972"),
    ("Austin", "TX", "787"),
    ("Phoenix", "AZ", "850"),
    ("Atlanta", "GA", "303"),
    ("Chicago", "IL", "606"),
    ("Nashville", "TN", "372"),
    ("Madison", "WI", "537"),
    ("Richmond", "VA", "232"),
    ("Raleigh", "NC", "276"),
    ("Sacramento", "CA", "958"),
    ("Albany", "NY", "122"),
    ("Hartford", "CT", "061"),
    ("Providence", "RI", "029"),
    ("Burlington", "VT", "054"),
    ("Louisville", "KY", "402"),
    ("Cleveland", "OH", "441"),
    ("Minneapolis", "MN", "554"),
    ("Baltimore", "MD", "212"),
    ("Pittsburgh", "PA", "152"),
    ("Tallahassee", "FL", "323"),
    ("Charlestown", "NH", "036"),
    ("Grand Marais", "MN", "556"),
    ("Valentine", "NE", "692"),
    ("Socorro", "NM", "878"),
    ("Tucumcari", "NM", "884"),
];

/// A synthetic patient's demographics and identifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `P` + 9 digits.
    pub patient_id: String,
    /// Given name.
    pub first: &'static str,
    /// Family name.
    pub last: &'static str,
    /// `male` or `female`.
    pub gender: &'static str,
    /// Birth date (ages 18 to 100 at the start of the run; about 8 % are over 89).
    pub birth_date: NaiveDate,
    /// Street line, `123 Maple Street`.
    pub street: String,
    /// City.
    pub city: &'static str,
    /// Two-letter state.
    pub state: &'static str,
    /// Five-digit ZIP code.
    pub postal_code: String,
    /// `555-NNN-NNNN`.
    pub phone: String,
    /// `first.lastN@example.com`.
    pub email: String,
    /// `NNN-NN-NNNN`.
    pub ssn: String,
    /// `MRN` + 8 digits.
    pub mrn: String,
}

impl Identity {
    /// The identity of patient `index`, as of `today` (the start of the run).
    #[must_use]
    pub fn of(seed: u64, index: u64, today: NaiveDate) -> Self {
        let mut r = HashRng::new(seed, stream::IDENTITY, index, 0);
        let male = r.below(2) == 0;
        let first = if male {
            pick(&mut r, &MALE)
        } else {
            pick(&mut r, &FEMALE)
        };
        let last = pick(&mut r, &FAMILY);
        let street = format!("{} {}", 1 + r.below(9899), pick(&mut r, &STREETS));
        let (city, state, zip3) = pick(&mut r, &PLACES);
        let postal_code = format!("{zip3}{:02}", 1 + r.below(98));
        let age_years = if r.below(100) < 8 {
            90 + r.below(11)
        } else {
            18 + r.below(72)
        };
        let birth_date = birth_date(today, age_years, r.below(365));
        let phone = bijection(seed, 1, index, PHONE);
        let ssn = bijection(seed, 2, index, SSN);
        let (area, group, serial) = (
            101 + ssn / (99 * 9999),
            1 + (ssn / 9999) % 99,
            1 + ssn % 9999,
        );
        let area = if area == 666 { 899 } else { area };
        Self {
            patient_id: patient_id(seed, index),
            first,
            last,
            gender: if male { "male" } else { "female" },
            birth_date,
            street,
            city,
            state,
            postal_code,
            phone: format!("555-{:03}-{:04}", phone / 10_000, phone % 10_000),
            email: format!(
                "{}.{}{}@example.com",
                first.to_ascii_lowercase(),
                last.to_ascii_lowercase(),
                index + 1
            ),
            ssn: format!("{area:03}-{group:02}-{serial:04}"),
            mrn: format!("MRN{:08}", bijection(seed, 3, index, MRN)),
        }
    }

    /// Every PHI string of this identity.
    #[must_use]
    pub fn phi(&self) -> Vec<String> {
        vec![
            self.patient_id.clone(),
            self.first.to_owned(),
            self.last.to_owned(),
            format!("{} {}", self.first, self.last),
            self.birth_date.format("%Y-%m-%d").to_string(),
            self.street.clone(),
            self.city.to_owned(),
            self.phone.clone(),
            self.email.clone(),
            self.ssn.clone(),
            self.mrn.clone(),
        ]
    }
}

/// The stable source id of patient `index`: `P` + 9 digits, distinct for every index below
/// 900 million.
#[must_use]
pub fn patient_id(seed: u64, index: u64) -> String {
    format!(
        "P{:09}",
        100_000_000 + bijection(seed, 0, index, PATIENT_ID)
    )
}

/// The moduli of the identifiers, each with a multiplier near `m / φ` that is coprime to `m`:
/// `index ↦ (offset + index × a) mod m` is then a bijection on `0..m` that spreads consecutive
/// indices over the whole range.
const PATIENT_ID: (u64, u64) = (900_000_000, 556_230_589);
const PHONE: (u64, u64) = (10_000_000, 6_180_339);
const SSN: (u64, u64) = (700 * 99 * 9999, 428_254_727);
const MRN: (u64, u64) = (100_000_000, 61_803_399);

/// Distinct values in `0..m` for distinct `index < m`.
fn bijection(seed: u64, salt: u64, index: u64, (m, a): (u64, u64)) -> u64 {
    let offset = u128::from(splitmix64(seed ^ splitmix64(salt)) % m);
    let v = (offset + u128::from(index) * u128::from(a)) % u128::from(m);
    u64::try_from(v).unwrap_or(0)
}

fn pick<T: Copy, const N: usize>(r: &mut HashRng, items: &[T; N]) -> T {
    let i = usize::try_from(r.below(N as u64)).unwrap_or(0);
    items[i]
}

fn birth_date(today: NaiveDate, age_years: u64, extra_days: u64) -> NaiveDate {
    let year = today.year() - i32::try_from(age_years).unwrap_or(0) - 1;
    let base = NaiveDate::from_ymd_opt(year, today.month(), today.day().min(28)).unwrap_or(today);
    // Up to a year later than `base`, so the age at `today` is `age_years` (or one more).
    base.checked_add_days(Days::new(extra_days)).unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn identifiers_are_unique_and_well_formed() {
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).expect("date");
        let ids: Vec<Identity> = (0..5000).map(|i| Identity::of(42, i, today)).collect();
        for field in [
            |p: &Identity| p.patient_id.clone(),
            |p: &Identity| p.phone.clone(),
            |p: &Identity| p.ssn.clone(),
            |p: &Identity| p.mrn.clone(),
            |p: &Identity| p.email.clone(),
        ] {
            let set: HashSet<String> = ids.iter().map(field).collect();
            assert_eq!(set.len(), ids.len());
        }
        for p in &ids {
            assert_eq!(p.patient_id.len(), 10);
            assert_eq!(p.ssn.len(), 11);
            assert!(!p.ssn.starts_with("666") && !p.ssn.starts_with('0'));
            assert_eq!(p.postal_code.len(), 5);
            let age = today.years_since(p.birth_date).expect("born before today");
            assert!((18..=100).contains(&age), "{age}");
        }
        let old = ids
            .iter()
            .filter(|p| today.years_since(p.birth_date).is_some_and(|a| a > 89))
            .count();
        assert!((200..600).contains(&old), "{old}");
        let restricted = ids
            .iter()
            .filter(|p| p.postal_code.starts_with("036"))
            .count();
        assert!(restricted > 50, "{restricted}");
    }

    #[test]
    fn multipliers_are_coprime_to_their_moduli() {
        const fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        for (m, a) in [PATIENT_ID, PHONE, SSN, MRN] {
            assert_eq!(gcd(m, a), 1, "{m} {a}");
        }
    }

    #[test]
    fn names_are_long_enough_to_scan_for() {
        for n in MALE.iter().chain(&FEMALE).chain(&FAMILY) {
            assert!(n.len() >= 5, "{n}");
        }
        for (city, state, zip3) in PLACES {
            assert!(
                city.len() >= 6 && state.len() == 2 && zip3.len() == 3,
                "{city}"
            );
        }
    }
}
