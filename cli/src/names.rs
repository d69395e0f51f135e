//! The names weirctl prints for the protocol's enums, in text and JSON alike.
//!
//! prost keeps an enum field as the `i32` on the wire. Printed as is, JSON said
//! `"state": 5` where text said `stopped`; every enum field weirctl prints goes through
//! [`name`] instead, so both outputs carry the same word.

use weir_proto::v1 as pb;

/// A protocol enum whose proto value names share one prefix (`PE_STATE_`).
pub(crate) trait ProtoEnum: TryFrom<i32> {
    /// The prefix every value's proto name starts with.
    const PREFIX: &'static str;
    /// The value's proto name, e.g. `PE_STATE_STOPPED`.
    fn proto_name(&self) -> &'static str;
}

macro_rules! proto_enums {
    ($($ty:ty => $prefix:literal,)*) => {$(
        impl ProtoEnum for $ty {
            const PREFIX: &'static str = $prefix;
            fn proto_name(&self) -> &'static str {
                self.as_str_name()
            }
        }
    )*};
}

proto_enums! {
    pb::AppState => "APP_STATE_",
    pb::PeState => "PE_STATE_",
    pb::WorkerState => "WORKER_STATE_",
    pb::UpgradePhase => "UPGRADE_PHASE_",
    pb::MemberRole => "MEMBER_ROLE_",
    pb::SpecFormat => "SPEC_FORMAT_",
    pb::partitioning::Kind => "KIND_",
}

/// The name of enum value `value` of `E`: its proto name without the prefix, in lower
/// case (`PE_STATE_STOPPED` is `stopped`). A value this weirctl does not know (a newer
/// master's) is `unknown(N)`, still a string, so scripts need no second case.
pub(crate) fn name<E: ProtoEnum>(value: i32) -> String {
    match E::try_from(value) {
        Ok(e) => e
            .proto_name()
            .trim_start_matches(E::PREFIX)
            .to_ascii_lowercase(),
        Err(_) => format!("unknown({value})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_drop_the_prefix_and_are_lower_case() {
        assert_eq!(name::<pb::PeState>(pb::PeState::Stopped as i32), "stopped");
        assert_eq!(name::<pb::PeState>(pb::PeState::Running as i32), "running");
        assert_eq!(
            name::<pb::AppState>(pb::AppState::Cancelled as i32),
            "cancelled"
        );
        assert_eq!(
            name::<pb::WorkerState>(pb::WorkerState::Alive as i32),
            "alive"
        );
        assert_eq!(
            name::<pb::UpgradePhase>(pb::UpgradePhase::RolledBack as i32),
            "rolled_back"
        );
        assert_eq!(
            name::<pb::MemberRole>(pb::MemberRole::Leader as i32),
            "leader"
        );
        assert_eq!(
            name::<pb::partitioning::Kind>(pb::partitioning::Kind::RoundRobin as i32),
            "round_robin"
        );
        assert_eq!(name::<pb::SpecFormat>(pb::SpecFormat::Json as i32), "json");
        assert_eq!(name::<pb::PeState>(99), "unknown(99)");
    }

    #[test]
    fn every_value_of_every_enum_has_a_word_for_a_name() {
        fn all<E: ProtoEnum>() -> Vec<String> {
            (0..32)
                .filter(|v| E::try_from(*v).is_ok())
                .map(name::<E>)
                .collect()
        }
        for names in [
            all::<pb::AppState>(),
            all::<pb::PeState>(),
            all::<pb::WorkerState>(),
            all::<pb::UpgradePhase>(),
            all::<pb::MemberRole>(),
            all::<pb::SpecFormat>(),
            all::<pb::partitioning::Kind>(),
        ] {
            assert!(names.len() >= 3, "{names:?}");
            for n in names {
                assert!(
                    !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{n:?}"
                );
            }
        }
    }
}
