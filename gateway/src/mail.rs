//! Outgoing mail (password-reset links) with lettre: over SMTP when `SMTP_URL` is
//! set, else as `.eml` files in `MAIL_DIR` (the devstack's default), else not at
//! all (the message is dropped with a warning: nothing to send it with).

use crate::config::MailSettings;
use lettre::message::{header::ContentType, Mailbox, Message};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// Sends one plain-text message to `to`.
pub async fn send(
    settings: &MailSettings,
    to: &str,
    subject: &str,
    body: String,
) -> anyhow::Result<()> {
    let message = Message::builder()
        .from(settings.from.parse::<Mailbox>()?)
        .to(to.parse::<Mailbox>()?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)?;
    if let Some(url) = &settings.smtp_url {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?.build();
        transport.send(message).await?;
    } else if let Some(dir) = &settings.mail_dir {
        tokio::fs::create_dir_all(dir).await?;
        let id = AsyncFileTransport::<Tokio1Executor>::new(dir)
            .send(message)
            .await?;
        tracing::info!(file = %dir.join(format!("{id}.eml")).display(), "mail written");
    } else {
        tracing::warn!("no SMTP_URL or MAIL_DIR: a message was not sent");
    }
    Ok(())
}
