//! Reading a provider key from stdin or a prompt that does not echo.

use std::io::{IsTerminal, Read};

use anyhow::Context;
use zeroize::Zeroizing;

use crate::vault::ProviderSecret;

/// Reads a secret: from a no-echo prompt on the terminal when stdin is one,
/// otherwise all of stdin.
pub fn read(what: &str) -> anyhow::Result<ProviderSecret> {
    let text = if std::io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password(format!("Paste the {what} (input hidden): "))
                .context("cannot read the key from the terminal")?,
        )
    } else {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the key from stdin")?;
        text
    };
    Ok(ProviderSecret::new(text.to_string()))
}
