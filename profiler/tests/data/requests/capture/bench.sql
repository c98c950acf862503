BEGIN;
SELECT 'hunter2-extended' AS secret, :aid AS aid;
COMMIT;
