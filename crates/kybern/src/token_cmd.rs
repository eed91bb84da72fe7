//! `kybern token create`: a bootstrap token for agents to join with, as
//! `kubeadm token create` makes one (a `kube-system/bootstrap-token-ID`
//! Secret), printed on stdout — with the whole `kybern agent` command line,
//! CA pin included, when asked.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kybern_apimachinery::bootstrap_token::{NAMESPACE, SECRET_PREFIX, SECRET_TYPE, ca_cert_hash};

/// The characters of token ids and secrets.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `kybern token ...`.
#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a bootstrap token and print it.
    Create(CreateArgs),
}

/// Arguments of `kybern token create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Kubeconfig of an administrator of the cluster.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// How long the token is valid (`24h`, `30m`, `90s`; `0` never expires).
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    ttl: u64,
    /// A description kept in the token's Secret.
    #[arg(long)]
    description: Option<String>,
    /// Print the `kybern agent` command that joins with the token: the
    /// server's URL, the token and the pin of the cluster CA's public key
    /// (`--discovery-token-ca-cert-hash`), as `kubeadm token create
    /// --print-join-command`.
    #[arg(long)]
    print_join_command: bool,
}

fn parse_ttl(s: &str) -> Result<u64, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {s:?}"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("invalid duration {s:?}: use s, m or h")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("duration {s:?} too long"))
}

/// `n` random characters of [`ALPHABET`] from the kernel's generator
/// (bytes past the last whole multiple of 36 are dropped, so each
/// character is equally likely).
fn random_chars(n: usize) -> anyhow::Result<String> {
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    let mut out = String::with_capacity(n);
    let mut byte = [0u8; 1];
    while out.len() < n {
        urandom.read_exact(&mut byte)?;
        if usize::from(byte[0]) < 252 {
            out.push(char::from(ALPHABET[usize::from(byte[0]) % ALPHABET.len()]));
        }
    }
    Ok(out)
}

/// Runs `kybern token create`.
pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create(args) = command;
    let kc = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let server = config.cluster_url.to_string();
    let ca = config.root_cert.clone().unwrap_or_default();
    let client = kube::Client::try_from(config)?;
    let (id, secret) = (random_chars(6)?, random_chars(16)?);
    let mut data = serde_json::json!({
        "token-id": id, "token-secret": secret,
        "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
        "auth-extra-groups": "system:bootstrappers:kybern:default-node-token",
        "description": args.description.unwrap_or_else(|| "made by kybern token create".into()),
    });
    if args.ttl > 0 {
        let at = chrono::Utc::now() + chrono::Duration::seconds(i64::try_from(args.ttl)?);
        data["expiration"] = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into();
    }
    let object: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{SECRET_PREFIX}{id}"), "namespace": NAMESPACE},
        "type": SECRET_TYPE, "stringData": data}))?;
    let secrets: Api<Secret> = Api::namespaced(client, NAMESPACE);
    secrets
        .create(&PostParams::default(), &object)
        .await
        .context("creating the token's Secret")?;
    let token = format!("{id}.{secret}");
    if !args.print_join_command {
        println!("{token}");
        return Ok(());
    }
    let Some(pin) = ca.first().and_then(|der| ca_cert_hash(der)) else {
        bail!("the kubeconfig names no cluster CA to pin");
    };
    println!(
        "kybern agent --server {} --token {token} --discovery-token-ca-cert-hash {pin} --kubeconfig /var/lib/kybern/agent.kubeconfig",
        server.trim_end_matches('/'),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_and_tokens_have_their_shapes() {
        assert_eq!(parse_ttl("24h"), Ok(86_400));
        assert_eq!(parse_ttl("30m"), Ok(1_800));
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("0"), Ok(0));
        assert!(parse_ttl("1d").is_err());
        assert!(parse_ttl("h").is_err());
        let token = format!(
            "{}.{}",
            random_chars(6).expect("random"),
            random_chars(16).expect("random")
        );
        assert!(kybern_apimachinery::bootstrap_token::split(&token).is_some());
    }
}
