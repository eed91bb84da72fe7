//! `kybern kubeconfig`: issues a client certificate from the cluster CA and
//! writes a kubeconfig with it, as `kubeadm kubeconfig user` does; how an
//! administrator gives a remote node agent (`system:node:NAME` in
//! `system:nodes`) or a person their own credentials.

use std::path::PathBuf;

use anyhow::{Context, bail};
use kybern_apiserver::pki::{Pki, default_hosts};

/// Arguments of `kybern kubeconfig`.
#[derive(clap::Args, Debug)]
pub struct KubeconfigArgs {
    /// The server's data directory, whose `pki/` holds the cluster CA.
    #[arg(long, default_value = "/var/lib/kybern")]
    data_dir: PathBuf,
    /// The user: the certificate's CN (`system:node:NAME` for a node).
    #[arg(long)]
    client_name: String,
    /// A group (the certificate's O); may be repeated.
    #[arg(long = "org")]
    orgs: Vec<String>,
    /// The API server's URL, as the client will reach it.
    #[arg(long)]
    server: String,
    /// Where to write the kubeconfig (readable by its owner only).
    #[arg(long)]
    out: PathBuf,
}

/// Writes the kubeconfig.
pub fn run(args: KubeconfigArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.join("pki");
    if !dir.join("ca.key").exists() {
        bail!(
            "no cluster CA under {}: run this where `kybern server` keeps its data",
            dir.display()
        );
    }
    let pki = Pki::ensure(&dir, &default_hosts(&[]))
        .with_context(|| format!("loading the cluster CA from {}", dir.display()))?;
    let orgs: Vec<&str> = args.orgs.iter().map(String::as_str).collect();
    pki.write_client_kubeconfig(&args.out, &args.server, &args.client_name, &orgs)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} for user {:?}{}",
        args.out.display(),
        args.client_name,
        if orgs.is_empty() {
            String::new()
        } else {
            format!(" in {}", orgs.join(", "))
        }
    );
    Ok(())
}
