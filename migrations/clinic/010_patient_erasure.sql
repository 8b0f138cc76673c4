-- Erasure of a patient (GDPR art. 17): the personal data is removed, not hidden.
-- Names are replaced by a pseudonym, contact data, birth date and the sealed social
-- security number (with its blind index) are cleared, clinical notes of the
-- patient's appointments are dropped. Rows the law requires to keep (invoices,
-- consents, appointments as facts) stay, now pointing at the pseudonymised patient.

CREATE FUNCTION erase_patient(pid uuid, unused uuid) RETURNS uuid LANGUAGE plpgsql AS $$
BEGIN
    UPDATE patients
        SET first_name = 'Erased',
            last_name = 'Patient ' || left(pid::text, 8),
            email = NULL,
            phone = NULL,
            birth_date = NULL,
            ssn_enc = NULL,
            ssn_bidx = NULL,
            updated_at = now()
        WHERE id = pid;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE appointments SET notes = NULL, updated_at = now()
        WHERE patient_id = pid AND notes IS NOT NULL;
    RETURN pid;
END;
$$;
