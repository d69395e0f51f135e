//! `weirctl certs init`: a development CA and the certificates of a cluster.

use anyhow::Context;
use std::path::PathBuf;
use weir_security::ca::{file_stem, write_file, DevCa};
use weir_security::Principal;

/// What `certs init` makes.
#[derive(clap::Args, Debug)]
pub struct Init {
    /// Where to write them (created if missing).
    pub dir: PathBuf,
    /// Master ids, comma-separated.
    // Its own id: the global `--master` list is `masters` too, of another type.
    #[arg(
        id = "master_ids",
        long = "masters",
        value_delimiter = ',',
        default_value = "1,2,3"
    )]
    pub masters: Vec<u64>,
    /// Worker ids, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "w1,w2,w3")]
    pub workers: Vec<String>,
    /// Tenants, comma-separated (each gets a client certificate).
    #[arg(long, value_delimiter = ',', default_value = "default")]
    pub tenants: Vec<String>,
    /// Cluster admins, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "admin")]
    pub admins: Vec<String>,
    /// Monitoring systems, comma-separated: each gets a client certificate that reads
    /// the masters' metrics endpoint and nothing else.
    #[arg(long, value_delimiter = ',', default_value = "prometheus")]
    pub monitors: Vec<String>,
    /// Name of the cluster (in the CA's name only).
    #[arg(long, default_value = "weir")]
    pub cluster: String,
    /// Overwrite a CA already in DIR (every certificate it issued stops working).
    #[arg(long)]
    pub force: bool,
}

/// Writes the CA and every certificate; prints what it wrote.
pub fn init(a: &Init) -> anyhow::Result<bool> {
    if a.dir.join("ca.pem").exists() && !a.force {
        anyhow::bail!(
            "{}: already holds a CA (ca.pem); --force replaces it, and every certificate it issued stops working",
            a.dir.display()
        );
    }
    let mut who = Vec::new();
    for id in &a.masters {
        anyhow::ensure!(*id > 0, "--masters: ids are > 0");
        who.push(Principal::Master(*id));
    }
    let named = |kind: &str, names: &[String], make: fn(String) -> Principal| {
        names
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| {
                anyhow::ensure!(
                    weir_security::principal::valid_name(n),
                    "--{kind}: {n:?}: a name is 1 to 128 of [A-Za-z0-9._-]"
                );
                Ok(make(n.clone()))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    who.extend(named("workers", &a.workers, Principal::Worker)?);
    who.extend(named("tenants", &a.tenants, Principal::Tenant)?);
    who.extend(named("admins", &a.admins, Principal::Admin)?);
    who.extend(named("monitors", &a.monitors, Principal::Monitor)?);
    let ca = DevCa::generate(&a.cluster)?;
    ca.write(&a.dir, &who)
        .with_context(|| format!("writing into {}", a.dir.display()))?;
    // Each tenant also gets an Ed25519 key to sign its specs with (the admin registers
    // the public half with `weirctl tenant put NAME --public-key tenant-NAME.sign.pub`).
    let mut signing = Vec::new();
    for p in who
        .iter()
        .filter(|p| p.role() == weir_security::Role::Tenant)
    {
        let (signer, pem) = weir_security::sign::Signer::generate()?;
        let stem = file_stem(p);
        write_file(&a.dir.join(format!("{stem}.sign.key")), &pem, true)?;
        write_file(
            &a.dir.join(format!("{stem}.sign.pub")),
            &weir_security::sign::public_key_text(signer.public_key()),
            false,
        )?;
        signing.push((stem, signer.key_id()));
    }
    println!(
        "wrote a CA and {} certificates into {}:",
        who.len(),
        a.dir.display()
    );
    println!("  ca.pem (trust this everywhere), ca.key (keep it offline)");
    for p in &who {
        println!(
            "  {stem}.pem, {stem}.key   {}",
            p.uri(),
            stem = file_stem(p)
        );
    }
    for (stem, id) in &signing {
        println!("  {stem}.sign.key, {stem}.sign.pub   Ed25519 signing key {id}");
    }
    Ok(true)
}
