//! Good and bad configuration files through the real binary: `validate-config` exits 0 or names file, key, reason.

use std::process::Command;

fn validate(file: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ordertrail")).args(["validate-config", file]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn a_production_style_file_is_valid() {
    let (ok, text) = validate("tests/testdata/good-tempo.yaml");
    assert!(ok, "{text}");
}

#[test]
fn an_exporter_section_as_a_collector_user_writes_it_is_valid() {
    let (ok, text) = validate("tests/testdata/good-collector-keys.yaml");
    assert!(ok, "{text}");
    let printed = Command::new(env!("CARGO_BIN_EXE_ordertrail"))
        .args(["validate-config", "tests/testdata/good-collector-keys.yaml", "--print"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("multiplier: 1.5"), "{printed}");
}

#[test]
fn the_readmes_notifications_example_is_valid() {
    let (ok, text) = validate("tests/testdata/good-notifications.yaml");
    assert!(ok, "{text}");
}

#[test]
fn the_embedded_default_round_trips_through_a_file() {
    let printed = Command::new(env!("CARGO_BIN_EXE_ordertrail")).arg("print-default-config").output().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.yaml");
    std::fs::write(&path, printed.stdout).unwrap();
    let (ok, text) = validate(path.to_str().unwrap());
    assert!(ok, "{text}");
}

#[test]
fn bad_files_name_file_key_and_reason_and_fail() {
    let cases = [
        ("tests/testdata/bad-unknown-key.yaml", "correlation", "unknown field `inherit_wiat`"),
        ("tests/testdata/bad-regex.yaml", "rules[0].match.span_name.regex", "invalid regular expression"),
        (
            "tests/testdata/bad-unknown-milestone.yaml",
            "rules[0].milestone",
            "`shipment_confirmation` is not a milestone",
        ),
        (
            "tests/testdata/bad-exporter.yaml",
            "exporters.otlp.endpoint",
            "must be an http:// or https:// URL for protocol http/protobuf (host:port is taken for grpc only",
        ),
        (
            "tests/testdata/bad-tls-skip-verify.yaml",
            "exporters.otlp.tls.insecure_skip_verify",
            "is not supported: ordertrail always verifies the backend's certificate; give the CA",
        ),
        ("tests/testdata/bad-sending-queue-disabled.yaml", "exporters.otlp.sending_queue.enabled", "always queues"),
        (
            "tests/testdata/bad-tls-missing-key.yaml",
            "receivers.otlp.protocols.grpc.tls.key_file",
            "is required when `tls` is given",
        ),
        ("tests/testdata/bad-tls-version.yaml", "api.http.tls.min_version", "`1.1` is not one of 1.2, 1.3"),
        ("tests/testdata/bad-postgres-tls.yaml", "storage.postgres.tls", "cert_file and key_file go together"),
        (
            "tests/testdata/bad-notifier-team.yaml",
            "notifications.notifiers[0].teams",
            "`warehouse` owns no milestone or exception class; the teams are",
        ),
        ("tests/testdata/bad-auth-both.yaml", "api.auth", "give one of bearer_token_file, bearer_token_env, not both"),
        (
            "tests/testdata/bad-compression-level.yaml",
            "exporters.otlp.compression_params.level",
            "12 is not within 1..=9",
        ),
        ("tests/testdata/does-not-exist.yaml", "", "cannot read config file"),
        ("tests/testdata/bad-sla-calendar.yaml", "sla.targets[0].calendar", "calendar `office` is not defined"),
        ("tests/testdata/bad-time-zone.yaml", "sla.calendars.office", "unknown time zone `Europe/Atlantis`"),
        ("tests/testdata/bad-sla-milestone.yaml", "sla.targets[0].to", "`wave_release` is not a milestone"),
        (
            "tests/testdata/bad-sla-override.yaml",
            "sla.targets[0].overrides[0].dimension",
            "`region` is not a dimension",
        ),
    ];
    for (file, key, reason) in cases {
        let (ok, text) = validate(file);
        assert!(!ok, "{file} should be refused");
        assert!(text.contains(file), "{file}: message names the file: {text}");
        assert!(text.contains(key), "{file}: message names the key {key}: {text}");
        assert!(text.contains(reason), "{file}: message gives the reason {reason}: {text}");
    }
}

#[test]
fn run_refuses_to_start_on_a_bad_file() {
    let output = Command::new(env!("CARGO_BIN_EXE_ordertrail"))
        .args(["run", "--config", "tests/testdata/bad-regex.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("rules[0].match.span_name.regex"));
}

#[test]
fn run_refuses_to_start_on_tls_files_that_hold_no_certificate_naming_key_and_file() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ordertrail"))
        .args(["run", "--config", "tests/testdata/bad-tls-not-pem.yaml", "--grpc-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0", "--api-http-listen", "127.0.0.1:0", "--api-grpc-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("receivers.otlp.protocols.grpc.tls"), "{stderr}");
    assert!(
        stderr.contains("tests/testdata/good-tempo.yaml") && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );
    // Not a terminal: no colour codes in the log.
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ordertrail"))
        .args(["--log-format", "json", "run", "--config", "tests/testdata/bad-tls-not-pem.yaml"])
        .args(["--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--api-http-listen", "127.0.0.1:0", "--api-grpc-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logged: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON object"))
        .collect();
    let bounds = logged.iter().find(|l| l["message"] == "memory bounds").expect("the memory bounds line");
    assert_eq!(bounds["level"], "INFO");
    assert!(bounds["admission_mib"].is_number(), "{bounds}");
}

#[test]
fn trace_id_is_printed_for_pasting_into_a_backend() {
    let output = Command::new(env!("CARGO_BIN_EXE_ordertrail")).args(["trace-id", "SO-10042"]).output().unwrap();
    let line = String::from_utf8(output.stdout).unwrap();
    assert_eq!(line.trim(), hex::encode(ordertrail_core::ids::order_trace_id("SO-10042")));
    assert_eq!(line.trim().len(), 32);
}

#[test]
fn the_shipped_backend_fragments_are_valid_with_the_default() {
    for fragment in ["collector-config/ordertrail-to-tempo.yaml", "collector-config/ordertrail-to-jaeger.yaml"] {
        let yaml =
            format!("{}\n{}", ordertrail_core::config::DEFAULT_CONFIG_YAML, std::fs::read_to_string(fragment).unwrap());
        let config = ordertrail_core::config::parse(&yaml, fragment).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.exporter.is_some(), "{fragment}");
    }
}

#[test]
fn validate_config_prints_what_a_partial_file_amounts_to() {
    let fragment = "collector-config/ordertrail-to-tempo.yaml";
    let print = |file: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_ordertrail")).args(["validate-config", file, "--print"]).output();
        let output = output.unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let merged = print(fragment);
    // The file's exporter, over the default's taxonomy, rules and every built-in setting.
    assert!(merged.contains("endpoint: https://tempo-distributor.observability.svc:4317"), "{merged}");
    assert!(merged.contains("X-Scope-OrgID: distribution"), "{merged}");
    assert!(merged.contains("- name: order_capture"), "{merged}");
    assert!(merged.contains("name: approval-outside-system-of-record"), "{merged}");
    assert!(merged.contains("max_pending_spans: 100000"), "{merged}");
    // What it prints is a complete configuration that amounts to itself.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("merged.yaml");
    std::fs::write(&path, &merged).unwrap();
    assert_eq!(print(path.to_str().unwrap()), merged);
}

#[test]
fn print_default_config_shows_every_setting_with_its_value() {
    let output = Command::new(env!("CARGO_BIN_EXE_ordertrail")).arg("print-default-config").output().unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    for setting in [
        "max_recv_msg_size_mib: 4",
        "inherit_wait: 10s",
        "max_orders: 1000000",
        "queue_size: 256",
        "memory_limit_mib: null",
        "detection_delay: 10s",
        "max_page_size: 1000",
        "max_series_per_metric: 2000",
    ] {
        assert!(printed.contains(setting), "`{setting}` missing from:\n{printed}");
    }
}

#[test]
fn run_refuses_to_start_on_a_truncated_store_naming_it_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A store with an export queue in it, written by the binary's own store code.
    {
        use ordertrail::store::{OrderStore, QueuedExport, RedbStore};
        let mut store = RedbStore::open(&data, ordertrail::store::Durability::Durable).unwrap();
        let exports: Vec<QueuedExport> =
            (0..100u8).map(|n| QueuedExport { spans: 1, request: vec![n; 8192] }).collect();
        store.commit(&Default::default(), &exports).unwrap();
    }
    let file = data.join("ordertrail.redb");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len / 3).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ordertrail"))
        .args(["run", "--data-dir", data.to_str().unwrap(), "--grpc-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0", "--api-http-listen", "127.0.0.1:0", "--api-grpc-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ordertrail.redb") && stderr.contains("damaged"), "{stderr}");
    assert!(stderr.contains("restore it from a backup"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
