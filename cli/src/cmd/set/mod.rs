//! `skerry set`: change one aspect of existing objects (today only `image`), one file per
//! subcommand.

pub mod image;

use super::Ctx;
use crate::error::Result;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Update the image of containers in pods, deployments, replica sets or replication controllers
    Image(image::Args),
}

pub async fn run(ctx: &mut Ctx, command: Command) -> Result<()> {
    match command {
        Command::Image(a) => image::run(ctx, a).await,
    }
}
