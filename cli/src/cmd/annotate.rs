//! `skerry annotate`: `label`'s twin for annotations (`--overwrite`, `KEY-` removes; the
//! `kubernetes.io/change-cause` annotation may always be overwritten). The code lives in `label`.

use super::label::{self, Args, Field};
use super::Ctx;
use crate::error::Result;

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    label::run(ctx, args, Field::Annotations).await
}
