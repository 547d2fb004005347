//! Text a person types or a client sends: topic and subscription names, topic config
//! settings (`key=value`), sizes, durations and retention values. Every parser must
//! answer with a value or an error on any input, and a name it accepts must be one
//! the broker can use as a directory name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsub_proto::ids::TopicName;
use pubsub_proto::topic_config::ConfigSetting;
use pubsub_proto::units;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(name) = TopicName::new(text) {
        let name = name.as_str();
        assert!(!name.is_empty() && name.len() <= 249 && !name.contains(".."));
        assert!(!name.contains('/') && name != ".");
    }
    let _ = text.parse::<ConfigSetting>();
    let _ = units::parse_size(text);
    let _ = units::parse_size_limit(text);
    let _ = units::parse_retention(text);
    let _ = units::parse_ms(text);
});
