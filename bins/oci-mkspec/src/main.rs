//! oci-mkspec: not yet implemented beyond its command line.

use common::cli::Tool;

const TOOL: Tool = Tool {
    name: "oci-mkspec",
    help: "Usage: oci-mkspec [OPTIONS]\n\nSee oci-mkspec(1).\n",
};

fn main() {
    TOOL.main(|args| {
        args.positionals()?;
        anyhow::bail!("not implemented yet")
    })
}
