-- Every attempt a mail has had, admin retries included (`attempts` starts
-- again from zero at a retry, because it is the budget). Recording an
-- attempt numbers it from this column instead of counting the mail's
-- attempt rows. Only mail with attempts is rewritten here.
ALTER TABLE mail_outbox ADD COLUMN attempts_total BIGINT NOT NULL DEFAULT 0;
UPDATE mail_outbox
SET attempts_total = counted.n
FROM (SELECT mail_id, COUNT(*) AS n FROM mail_attempts GROUP BY mail_id) AS counted
WHERE counted.mail_id = mail_outbox.id;
