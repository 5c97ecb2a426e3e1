"""Email: templates, the outbox, delivery over SMTP, signed links and open/click tracking."""
