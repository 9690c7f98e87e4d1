-- Mail that carries a secret (a sign-in code). `masked_subject` is the
-- subject with the secret masked: the only one the admin API shows, and
-- the one left once the body is erased, a short while after delivery
-- (`erased_at`); the delivery record itself stays for the usual retention.
ALTER TABLE mail_outbox ADD COLUMN masked_subject TEXT;
ALTER TABLE mail_outbox ADD COLUMN erased_at TIMESTAMPTZ;
-- Secret-bearing mail whose body is still there: the eraser's whole work.
CREATE INDEX mail_outbox_secret ON mail_outbox (id)
    WHERE masked_subject IS NOT NULL AND erased_at IS NULL;
