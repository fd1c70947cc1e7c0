//! `unpersonal-train demo-site`: a synthetic site (patients with several studies, a findings
//! CSV) made from Fashion-MNIST, to try the own-data path without patient data
//! (`docs/demo-site.md`).

use std::path::PathBuf;

use clap::Args;

use unpersonal_trainer::data::{Dataset, Split};
use unpersonal_trainer::demo::{SiteOptions, write_site};

#[derive(Args)]
pub struct DemoSiteArgs {
    /// Directory of the site: new, empty, or a previous demo site (replaced); anything else
    /// is refused.
    #[arg(long)]
    out: PathBuf,
    /// Patients, each one distinct source image with several studies.
    #[arg(long, default_value_t = 2000)]
    patients: usize,
    /// Directory of Fashion-MNIST IDX files.
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    source: PathBuf,
    /// Split the patients are drawn from: `test` takes the t10k images, so that a train and a
    /// test site share no base image.
    #[arg(long, value_enum, default_value_t = SplitArg::Train)]
    split: SplitArg,
    /// Seed of every random choice: the same seed writes the same files.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Side of the written images: 28 keeps Fashion-MNIST's resolution, a larger one scales
    /// the images up (a site whose images need resizing).
    #[arg(long, default_value_t = 28)]
    size: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SplitArg {
    /// The 60,000 training images.
    Train,
    /// The 10,000 t10k images.
    Test,
}

pub fn run(args: DemoSiteArgs) -> anyhow::Result<()> {
    let split = match args.split {
        SplitArg::Train => Split::Train,
        SplitArg::Test => Split::Test,
    };
    let source = Dataset::load(&args.source, split)?;
    let options = SiteOptions {
        patients: args.patients,
        size: args.size,
        seed: args.seed,
        ..SiteOptions::default()
    };
    let summary = write_site(&source, &args.out, &options)?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
