use super::*;

#[test]
fn flags_win_over_the_file_and_the_file_over_defaults() {
    let file: Settings =
        toml::from_str("listen = \"127.0.0.1:1\"\nshutdown_grace_ms = 5\n").unwrap();
    let flags = Settings {
        listen: Some("127.0.0.1:2".into()),
        ..Settings::default()
    };
    let effective = flags.merge(file).resolve().unwrap();
    assert_eq!(effective.listen, "127.0.0.1:2");
    assert_eq!(effective.shutdown_grace_ms, 5);
    assert_eq!(effective.http_listen, DEFAULT_HTTP_LISTEN);
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let unknown = toml::from_str::<Settings>("listen_addr = \"x\"\n").unwrap_err();
    assert!(unknown.to_string().contains("listen_addr"), "{unknown}");
    let wrong_type = parse_file("shutdown_grace_ms = \"soon\"\n").unwrap_err();
    assert!(
        wrong_type
            .to_string()
            .starts_with("shutdown_grace_ms: invalid type"),
        "{wrong_type}"
    );
    let bad_fsync = Settings {
        fsync: Some("sometimes".into()),
        ..Settings::default()
    };
    let error = bad_fsync.resolve().unwrap_err();
    assert!(error.to_string().starts_with("fsync:"), "{error}");
    let bad_limit = Settings {
        default_max_message_bytes: Some(10),
        ..Settings::default()
    };
    let error = bad_limit.resolve().unwrap_err();
    assert!(
        error.to_string().starts_with("default_max_message_bytes:"),
        "{error}"
    );
}

#[test]
fn accepted_data_loss_comes_from_a_list_of_partitions() {
    let file: Settings = toml::from_str("accept_data_loss = [\"a/0\", \"b.c/12\"]\n").unwrap();
    let config = file.resolve().unwrap().broker_config().unwrap();
    assert_eq!(
        config.accept_data_loss,
        [PartitionName::new("a", 0), PartitionName::new("b.c", 12)]
    );
    let bad = Settings {
        accept_data_loss: Some(vec!["a".into()]),
        ..Settings::default()
    };
    let error = bad.resolve().unwrap_err();
    assert!(
        error.to_string().starts_with("accept_data_loss:"),
        "{error}"
    );
}

#[test]
fn the_printed_configuration_reads_back_as_a_file() {
    let effective = Settings::default().resolve().unwrap();
    let text = effective.to_toml().unwrap();
    let again: Settings = toml::from_str(&text).unwrap();
    assert_eq!(again.resolve().unwrap().to_toml().unwrap(), text);
}

#[test]
fn tls_settings_come_in_complete_sets() {
    let config = |settings: Settings| settings.resolve().and_then(|e| e.broker_config());
    assert!(config(Settings::default()).unwrap().tls.is_none());
    let cert_only = Settings {
        tls_cert: Some("tls.crt".into()),
        ..Settings::default()
    };
    let error = config(cert_only).unwrap_err();
    assert!(error.to_string().starts_with("tls_key:"), "{error}");
    let required_without_ca = Settings {
        tls_cert: Some("tls.crt".into()),
        tls_key: Some("tls.key".into()),
        tls_client_auth: Some("required".into()),
        ..Settings::default()
    };
    let error = config(required_without_ca).unwrap_err();
    assert!(error.to_string().starts_with("tls_client_ca:"), "{error}");
    let bad_mode = Settings {
        tls_client_auth: Some("sometimes".into()),
        ..Settings::default()
    };
    let error = config(bad_mode).unwrap_err();
    assert!(error.to_string().starts_with("tls_client_auth:"), "{error}");
    let mutual = Settings {
        tls_cert: Some("tls.crt".into()),
        tls_key: Some("tls.key".into()),
        tls_client_ca: Some("ca.crt".into()),
        tls_client_auth: Some("required".into()),
        ..Settings::default()
    };
    let tls = config(mutual).unwrap().tls.unwrap();
    assert_eq!(tls.client_auth, ClientAuth::Required);
    assert_eq!(tls.client_ca, Some(PathBuf::from("ca.crt")));
}

#[test]
fn auth_settings_are_checked_together() {
    let config = |settings: Settings| settings.resolve().and_then(|e| e.broker_config());
    assert_eq!(
        config(Settings::default()).unwrap().auth,
        Authentication::None
    );
    let tokens = Settings {
        auth: Some("token".into()),
        token_file: Some("tokens".into()),
        ..Settings::default()
    };
    assert_eq!(
        config(tokens).unwrap().auth,
        Authentication::Token(TokenAuth::new("tokens"))
    );
    for (settings, key) in [
        (
            Settings {
                auth: Some("token".into()),
                ..Settings::default()
            },
            "token_file or jwks_file:",
        ),
        (
            Settings {
                token_file: Some("tokens".into()),
                ..Settings::default()
            },
            "token_file:",
        ),
        (
            Settings {
                auth: Some("mtls".into()),
                ..Settings::default()
            },
            "auth: mtls needs",
        ),
        (
            Settings {
                auth: Some("password".into()),
                ..Settings::default()
            },
            "auth: must be",
        ),
    ] {
        let error = config(settings).unwrap_err();
        assert!(error.to_string().starts_with(key), "{error}");
    }
    let mutual = Settings {
        auth: Some("mtls".into()),
        tls_cert: Some("tls.crt".into()),
        tls_key: Some("tls.key".into()),
        tls_client_ca: Some("ca.crt".into()),
        tls_client_auth: Some("required".into()),
        ..Settings::default()
    };
    assert_eq!(config(mutual).unwrap().auth, Authentication::Mtls);
}

fn jwt_settings() -> Settings {
    Settings {
        auth: Some("token".into()),
        jwks_file: Some("jwks.json".into()),
        jwt_issuer: Some("https://kubernetes.default.svc".into()),
        jwt_audience: Some("brook".into()),
        ..Settings::default()
    }
}

#[test]
fn jwt_settings_come_with_their_issuer_and_audience() {
    let config = |settings: Settings| settings.resolve().and_then(|e| e.broker_config());
    let jwt = JwtAuth::new("jwks.json", "https://kubernetes.default.svc", "brook");
    assert_eq!(
        config(jwt_settings()).unwrap().auth,
        Authentication::Token(TokenAuth::jwt(jwt.clone()))
    );
    let both = Settings {
        token_file: Some("tokens".into()),
        jwt_leeway_s: Some(5),
        ..jwt_settings()
    };
    let mut short = jwt;
    short.leeway = Duration::from_secs(5);
    assert_eq!(
        config(both).unwrap().auth,
        Authentication::Token(TokenAuth::new("tokens").with_jwt(short))
    );
    for (settings, key) in [
        (
            Settings {
                jwt_issuer: None,
                ..jwt_settings()
            },
            "jwt_issuer: needed",
        ),
        (
            Settings {
                jwt_audience: Some(String::new()),
                ..jwt_settings()
            },
            "jwt_audience: needed",
        ),
        (
            Settings {
                jwks_file: None,
                token_file: Some("tokens".into()),
                ..jwt_settings()
            },
            "jwt_issuer: only used with jwks_file",
        ),
        (
            Settings {
                auth: None,
                jwt_issuer: None,
                jwt_audience: None,
                ..jwt_settings()
            },
            "jwks_file: only used with auth = token",
        ),
        (
            Settings {
                jwt_leeway_s: Some(3600),
                ..jwt_settings()
            },
            "jwt_leeway_s: at most 300",
        ),
    ] {
        let error = config(settings).unwrap_err();
        assert!(error.to_string().starts_with(key), "{key}: {error}");
    }
    // Printed, and read back.
    let text = jwt_settings().resolve().unwrap().to_toml().unwrap();
    for line in [
        "jwks_file = \"jwks.json\"",
        "jwt_issuer = \"https://kubernetes.default.svc\"",
        "jwt_audience = \"brook\"",
        "jwt_leeway_s = 30",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[test]
fn the_certificate_mapping_is_for_mtls_only() {
    let config = |settings: Settings| settings.resolve().and_then(|e| e.broker_config());
    let mutual = |mapping: &str| Settings {
        auth: Some("mtls".into()),
        mtls_principal: Some(mapping.into()),
        tls_cert: Some("tls.crt".into()),
        tls_key: Some("tls.key".into()),
        tls_client_ca: Some("ca.crt".into()),
        tls_client_auth: Some("required".into()),
        ..Settings::default()
    };
    for (name, mapping) in [
        ("common-name", CertificatePrincipal::CommonName),
        ("dns-name", CertificatePrincipal::DnsName),
        ("uri", CertificatePrincipal::Uri),
        ("subject", CertificatePrincipal::Subject),
    ] {
        let tls = config(mutual(name)).unwrap().tls.unwrap();
        assert_eq!(tls.client_principal, mapping, "{name}");
    }
    let error = config(mutual("email")).unwrap_err();
    assert!(error.to_string().starts_with("mtls_principal:"), "{error}");
    let without_mtls = Settings {
        mtls_principal: Some("uri".into()),
        ..Settings::default()
    };
    let error = config(without_mtls).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("mtls_principal: only used with auth = mtls"),
        "{error}"
    );
    let printed = Settings::default().resolve().unwrap().to_toml().unwrap();
    assert!(
        printed.contains("mtls_principal = \"common-name\""),
        "{printed}"
    );
}

#[test]
fn node_id_and_peers_come_together_and_are_checked() {
    let config = |settings: Settings| settings.resolve().and_then(|e| e.broker_config());
    assert_eq!(config(Settings::default()).unwrap().cluster, None);
    let peers = |list: &[&str]| Some(list.iter().map(|p| (*p).to_owned()).collect());
    let three = Settings {
        node_id: Some(2),
        peers: peers(&["1=b1:9420", "2=b2:9420", "3=10.0.0.3:9420"]),
        ..Settings::default()
    };
    let cluster = config(three).unwrap().cluster.unwrap();
    assert_eq!(cluster.node_id, 2);
    assert_eq!(cluster.peers[&3], "10.0.0.3:9420");
    for (settings, says) in [
        (
            Settings {
                node_id: Some(1),
                ..Settings::default()
            },
            "peers: needed",
        ),
        (
            Settings {
                peers: peers(&["1=b1:9420"]),
                ..Settings::default()
            },
            "node_id: needed",
        ),
        (
            Settings {
                node_id: Some(4),
                peers: peers(&["1=b1:9420", "2=b2:9420"]),
                ..Settings::default()
            },
            "must include this broker",
        ),
        (
            Settings {
                node_id: Some(1),
                peers: peers(&["1=b1"]),
                ..Settings::default()
            },
            "is not HOST:PORT",
        ),
        (
            Settings {
                node_id: Some(1),
                peers: peers(&["one=b1:9420"]),
                ..Settings::default()
            },
            "is not a broker id",
        ),
        (
            Settings {
                node_id: Some(1),
                peers: peers(&["1=b1:9420", "1=b2:9420"]),
                ..Settings::default()
            },
            "given twice",
        ),
    ] {
        let error = config(settings).unwrap_err().to_string();
        assert!(error.contains(says), "{error} (expected {says})");
    }
}

#[test]
fn the_peers_ca_and_token_file_belong_to_a_cluster() {
    let config = |settings: Settings| settings.resolve().and_then(|e| e.broker_config());
    let peers = Some(vec!["1=b1:9420".to_owned()]);
    let cluster = config(Settings {
        node_id: Some(1),
        peers: peers.clone(),
        peer_ca: Some("ca.pem".into()),
        peer_token_file: Some("peer-token".into()),
        ..Settings::default()
    })
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(cluster.peer_ca, Some("ca.pem".into()));
    assert_eq!(cluster.peer_token_file, Some("peer-token".into()));
    let alone = config(Settings {
        peer_token_file: Some("peer-token".into()),
        ..Settings::default()
    })
    .unwrap_err()
    .to_string();
    assert!(alone.contains("need node_id and peers"), "{alone}");
}
