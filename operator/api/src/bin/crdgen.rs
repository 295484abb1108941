//! Writes the CRD manifests of every vigil kind into the directory given (`make crds`).

use std::{fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "crds".into()));
    fs::create_dir_all(&dir)?;
    for crd in vigil_api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let path = dir.join(format!("{name}.yaml"));
        fs::write(&path, vigil_api::render_crd(&crd)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
