//! Every boundary of every parameter of the RCP 2017 chart, both sides.

use super::*;

/// `(value, expected sub-score)` pairs at both sides of every boundary.
fn check(name: &str, f: impl Fn(f64) -> u8, cases: &[(f64, u8)]) {
    for (v, want) in cases {
        assert_eq!(f(*v), *want, "{name} {v}");
    }
}

#[test]
fn respiration_rate_boundaries() {
    check(
        "RR",
        respiration_rate,
        &[
            (0.0, 3),
            (8.0, 3),
            (9.0, 1),
            (11.0, 1),
            (12.0, 0),
            (20.0, 0),
            (21.0, 2),
            (24.0, 2),
            (25.0, 3),
            (60.0, 3),
        ],
    );
}

#[test]
fn spo2_scale_1_boundaries_with_and_without_oxygen() {
    for o2 in [false, true] {
        check(
            "SpO2 scale 1",
            |v| spo2(v, Spo2Scale::One, o2),
            &[
                (70.0, 3),
                (91.0, 3),
                (92.0, 2),
                (93.0, 2),
                (94.0, 1),
                (95.0, 1),
                (96.0, 0),
                (100.0, 0),
            ],
        );
    }
}

#[test]
fn spo2_scale_2_boundaries_on_air_and_on_oxygen() {
    let low = [
        (70.0, 3),
        (83.0, 3),
        (84.0, 2),
        (85.0, 2),
        (86.0, 1),
        (87.0, 1),
        (88.0, 0),
        (92.0, 0),
    ];
    check(
        "SpO2 scale 2, air",
        |v| spo2(v, Spo2Scale::Two, false),
        &low,
    );
    check(
        "SpO2 scale 2, oxygen",
        |v| spo2(v, Spo2Scale::Two, true),
        &low,
    );
    check(
        "SpO2 scale 2, air",
        |v| spo2(v, Spo2Scale::Two, false),
        &[(93.0, 0), (96.0, 0), (97.0, 0), (100.0, 0)],
    );
    check(
        "SpO2 scale 2, oxygen",
        |v| spo2(v, Spo2Scale::Two, true),
        &[
            (93.0, 1),
            (94.0, 1),
            (95.0, 2),
            (96.0, 2),
            (97.0, 3),
            (100.0, 3),
        ],
    );
}

#[test]
fn air_or_oxygen_scores() {
    assert_eq!(air_or_oxygen(false), 0);
    assert_eq!(air_or_oxygen(true), 2);
}

#[test]
fn systolic_bp_boundaries() {
    check(
        "SBP",
        systolic_bp,
        &[
            (60.0, 3),
            (90.0, 3),
            (91.0, 2),
            (100.0, 2),
            (101.0, 1),
            (110.0, 1),
            (111.0, 0),
            (219.0, 0),
            (220.0, 3),
            (260.0, 3),
        ],
    );
}

#[test]
fn pulse_boundaries() {
    check(
        "pulse",
        pulse,
        &[
            (20.0, 3),
            (40.0, 3),
            (41.0, 1),
            (50.0, 1),
            (51.0, 0),
            (90.0, 0),
            (91.0, 1),
            (110.0, 1),
            (111.0, 2),
            (130.0, 2),
            (131.0, 3),
            (200.0, 3),
        ],
    );
}

#[test]
fn consciousness_new_confusion_counts_like_voice_pain_unresponsive() {
    assert_eq!(consciousness(Acvpu::Alert), 0);
    for c in [
        Acvpu::NewConfusion,
        Acvpu::Voice,
        Acvpu::Pain,
        Acvpu::Unresponsive,
    ] {
        assert_eq!(consciousness(c), 3, "{c:?}");
    }
    assert_eq!(Acvpu::parse("C"), Some(Acvpu::NewConfusion));
    assert_eq!(Acvpu::parse(" alert "), Some(Acvpu::Alert));
    assert_eq!(Acvpu::parse("drowsy"), None);
}

#[test]
fn temperature_boundaries_at_one_decimal() {
    check(
        "temp",
        temperature,
        &[
            (33.0, 3),
            (35.0, 3),
            (35.1, 1),
            (36.0, 1),
            (36.1, 0),
            (38.0, 0),
            (38.1, 1),
            (39.0, 1),
            (39.1, 2),
            (41.0, 2),
            // Charted to one decimal.
            (35.04, 3),
            (35.05, 1),
            (38.04, 0),
        ],
    );
}

#[test]
fn rates_are_charted_as_whole_numbers() {
    assert_eq!(respiration_rate(20.4), 0);
    assert_eq!(respiration_rate(20.5), 2);
    assert_eq!(pulse(90.4), 0);
    assert_eq!(pulse(90.6), 1);
}

#[test]
fn levels_follow_the_aggregate_and_any_single_three() {
    assert_eq!(level(0, false), Level::None);
    assert_eq!(level(1, false), Level::Low);
    assert_eq!(level(4, false), Level::Low);
    assert_eq!(level(3, true), Level::LowMedium);
    assert_eq!(level(4, true), Level::LowMedium);
    assert_eq!(level(5, false), Level::Medium);
    assert_eq!(level(5, true), Level::Medium);
    assert_eq!(level(6, true), Level::Medium);
    assert_eq!(level(7, false), Level::High);
    assert_eq!(level(20, true), Level::High);
}

#[test]
fn a_full_score_sums_sub_scores_and_names_what_is_missing() {
    let obs = Observations {
        respiration_rate: Some(22.0), // 2
        spo2: Some(95.0),             // scale 2 on oxygen: 2; scale 1: 1
        on_oxygen: Some(true),        // 2
        systolic_bp: Some(105.0),     // 1
        pulse: Some(112.0),           // 2
        consciousness: None,          // missing
        temperature: Some(f64::NAN),  // not a value: missing
    };
    let s2 = score(&obs, Spo2Scale::Two);
    assert_eq!(s2.total, 9);
    assert_eq!(
        s2.sub,
        [Some(2), Some(2), Some(2), Some(1), Some(2), None, None]
    );
    assert_eq!(
        s2.missing,
        vec![Parameter::Consciousness, Parameter::Temperature]
    );
    assert_eq!(s2.level, Level::High);
    let s1 = score(&obs, Spo2Scale::One);
    assert_eq!(s1.total, 8);
    let calm = Observations {
        respiration_rate: Some(16.0),
        spo2: Some(97.0),
        on_oxygen: Some(false),
        systolic_bp: Some(125.0),
        pulse: Some(72.0),
        consciousness: Some(Acvpu::Voice),
        temperature: Some(36.8),
    };
    let s = score(&calm, Spo2Scale::One);
    assert_eq!((s.total, s.level), (3, Level::LowMedium));
    assert!(s.missing.is_empty());
}
