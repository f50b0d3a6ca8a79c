//! TLS to Redis: a private redis-server with a TLS port and certificates
//! made per test (tests/common/tls.rs). Verified connections, a CA that did
//! not sign the server refused, a name mismatch and `server_name`, mutual
//! TLS required and satisfied, `insecure_skip_verify`, TLS and plain ports
//! crossed, each failure said in words that tell what to do; then the
//! daemon end to end and the CLI, over TLS only.

mod common;

use std::fs;
use std::time::Duration;

use common::process::{redq, run_bounded, Daemon};
use common::tls::{Pki, TlsServer};
use common::wait::{secs, wait_for};
use common::workers::{command_handler, config, script};
use redq::config::{RedisConfig, TlsConfig};
use redq::Client;

fn redis_config(url: String, tls: TlsConfig) -> RedisConfig {
    RedisConfig {
        url,
        connect_timeout: Duration::from_secs(3),
        tls,
        ..Default::default()
    }
}

fn ca(pki: &Pki) -> TlsConfig {
    TlsConfig {
        ca_file: Some(pki.ca_file()),
        ..Default::default()
    }
}

/// Connects, enqueues and reads the job back: the whole path works.
async fn works(cfg: &RedisConfig) {
    let client = Client::open(cfg).await.expect("connect over TLS");
    let id = client
        .enqueue("q", redq::NewJob::new(&1).unwrap())
        .await
        .unwrap()
        .id;
    assert!(client.job("q", &id).await.unwrap().is_some());
}

async fn refused(cfg: &RedisConfig) -> String {
    match Client::open(cfg).await {
        Ok(_) => panic!("connected to {} although it should be refused", cfg.url),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_verified_connection_works_and_an_untrusted_server_is_refused_naming_the_ca() {
    let pki = Pki::new("redq test CA");
    let server = TlsServer::start(
        &pki.server("server", &["localhost"], true),
        &pki.ca_file(),
        false,
    );
    works(&redis_config(server.url("localhost"), ca(&pki))).await;
    works(&redis_config(server.url("127.0.0.1"), ca(&pki))).await;

    // Another CA did not sign the server.
    let other = Pki::new("another CA");
    let e = refused(&redis_config(server.url("localhost"), ca(&other))).await;
    assert!(e.contains("not signed by a CA redq trusts"), "{e}");
    assert!(e.contains(&other.ca_file().display().to_string()), "{e}");
    // Nor do the bundled public roots trust a private CA.
    let e = refused(&redis_config(server.url("localhost"), TlsConfig::default())).await;
    assert!(e.contains("redis.tls.ca_file"), "{e}");
}

#[tokio::test]
async fn a_name_the_certificate_does_not_hold_is_refused_and_server_name_fixes_it() {
    let pki = Pki::new("redq test CA");
    let server = TlsServer::start(
        &pki.server("server", &["redis.test"], false),
        &pki.ca_file(),
        false,
    );
    let e = refused(&redis_config(server.url("127.0.0.1"), ca(&pki))).await;
    assert!(e.contains("not for") && e.contains("server_name"), "{e}");
    let named = TlsConfig {
        server_name: Some("redis.test".into()),
        ..ca(&pki)
    };
    works(&redis_config(server.url("127.0.0.1"), named)).await;
}

#[tokio::test]
async fn mutual_tls_is_refused_without_a_client_certificate_and_works_with_one() {
    let pki = Pki::new("redq test CA");
    let server = TlsServer::start(
        &pki.server("server", &["localhost"], true),
        &pki.ca_file(),
        true,
    );
    let e = refused(&redis_config(server.url("localhost"), ca(&pki))).await;
    assert!(
        e.contains("client certificate") && e.contains("cert_file"),
        "{e}"
    );
    let client = pki.client("client");
    let mutual = TlsConfig {
        cert_file: Some(client.cert),
        key_file: Some(client.key),
        ..ca(&pki)
    };
    works(&redis_config(server.url("localhost"), mutual)).await;
}

#[tokio::test]
async fn insecure_skip_verify_accepts_a_self_signed_server() {
    // The server's certificate is signed by a CA the client never sees.
    let hidden = Pki::new("hidden CA");
    let server = TlsServer::start(
        &hidden.server("server", &["elsewhere"], false),
        &hidden.ca_file(),
        false,
    );
    let skip = TlsConfig {
        insecure_skip_verify: true,
        ..Default::default()
    };
    works(&redis_config(server.url("127.0.0.1"), skip)).await;
}

#[tokio::test]
async fn tls_and_plain_ports_crossed_say_which_scheme_to_use() {
    let pki = Pki::new("redq test CA");
    let server = TlsServer::start(
        &pki.server("server", &["localhost"], true),
        &pki.ca_file(),
        false,
    );
    // redis:// at the TLS port.
    let plain_at_tls = redis_config(
        format!("redis://127.0.0.1:{}", server.tls_port),
        TlsConfig::default(),
    );
    let e = refused(&plain_at_tls).await;
    assert!(e.contains("rediss://"), "{e}");
    // rediss:// at the plain port.
    let tls_at_plain = redis_config(
        format!("rediss://127.0.0.1:{}", server.redis.port),
        ca(&pki),
    );
    let e = refused(&tls_at_plain).await;
    assert!(e.contains("redis://"), "{e}");
}

#[test]
fn the_daemon_and_the_cli_run_jobs_over_tls_only() {
    let pki = Pki::new("redq test CA");
    let server = TlsServer::start(
        &pki.server("server", &["localhost"], true),
        &pki.ca_file(),
        false,
    );
    let url = server.url("localhost");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = script(d, "ok.sh", "cat > \"$OUT/$REDQ_JOB_ID.in\"\nprintf done\n");
    let queues = format!(
        "[queues.q]\nconcurrency = 2\nkeep_completed = 10\nhandler = {}\n",
        command_handler(&ok, &[], d, "")
    );
    let cfg = d.join("w.toml");
    let text = format!(
        "{}\n[redis.tls]\nca_file = {:?}\n",
        config(&url, "2s", &queues),
        pki.ca_file().display().to_string()
    );
    fs::write(&cfg, text).unwrap();
    let _daemon = Daemon::start(&cfg, &d.join("redq.log"), &[]);

    // A producer in another language: redis-cli over TLS, FCALL.
    let id = server
        .cli(&[
            "FCALL",
            "redq_enqueue",
            "1",
            "redq:{q}",
            r#"{"payload":{"n":1}}"#,
        ])
        .trim()
        .to_owned();
    assert!(!id.is_empty() && !id.contains(' '), "FCALL: {id}");
    let ca_env = pki.ca_file().display().to_string();
    let cli = |args: &[&str]| {
        run_bounded(
            redq()
                .args(["--redis-url", &url])
                .args(args)
                .env("REDQ_REDIS__TLS__CA_FILE", &ca_env),
            secs(10),
        )
    };
    let done = wait_for("the FCALL job to succeed", secs(15), || {
        let o = cli(&["job", "q", &id, "--json"]);
        let j: serde_json::Value =
            serde_json::from_str(&o.stdout).map_err(|e| format!("{e}: {}", o.stderr))?;
        if j["state"] == "succeeded" {
            Ok(j)
        } else {
            Err(j.to_string())
        }
    });
    assert_eq!(done["result"], "done");
    assert!(
        d.join(format!("{id}.in")).exists(),
        "the handler got the payload"
    );

    // The CLI enqueues and reads over TLS too.
    let o = cli(&["enqueue", "q", r#"{"n":2}"#]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let second = o.stdout.trim().to_owned();
    wait_for("the CLI job to succeed", secs(15), || {
        let o = cli(&["job", "q", &second, "--json"]);
        if o.stdout.contains("\"succeeded\"") {
            Ok(())
        } else {
            Err(o.stdout)
        }
    });
    let o = cli(&["stats", "q", "--json"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let stats: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(stats[0]["succeeded"], 2);
}

#[test]
fn redq_health_names_the_tls_problem() {
    let pki = Pki::new("redq test CA");
    let server = TlsServer::start(
        &pki.server("server", &["localhost"], true),
        &pki.ca_file(),
        false,
    );
    // No CA configured: the bundled roots do not trust the test CA.
    let o = run_bounded(
        redq().args(["--redis-url", &server.url("localhost"), "health"]),
        secs(15),
    );
    assert_eq!(o.code, Some(69), "{}", o.stderr);
    assert!(
        o.stderr.contains("not signed by a CA redq trusts")
            && o.stderr.contains("redis.tls.ca_file"),
        "{}",
        o.stderr
    );
    // A CA file that does not exist is a setting, not an unreachable Redis.
    let o = run_bounded(
        redq()
            .args(["--redis-url", &server.url("localhost"), "health"])
            .env("REDQ_REDIS__TLS__CA_FILE", "/nonexistent/ca.pem"),
        secs(15),
    );
    assert!(
        o.stderr.contains("redis.tls.ca_file") && o.stderr.contains("/nonexistent/ca.pem"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("PING"), "{}", o.stderr);
}
