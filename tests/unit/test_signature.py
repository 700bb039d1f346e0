import pytest

from worker.receiver.signature import SignatureError, compute_signature, sign, verify

SECRET = "whsec_unit_secret_one"
BODY = b'{"id": "evt_1"}'
NOW = 1_800_000_000


def test_a_signature_made_the_way_stripe_makes_it_is_accepted():
    header = sign(BODY, SECRET, NOW)
    assert verify(BODY, header, [SECRET], tolerance_seconds=300, now=NOW) == NOW


def test_any_of_several_secrets_is_accepted_during_a_rotation():
    header = sign(BODY, "whsec_new_secret_two", NOW)
    assert verify(BODY, header, [SECRET, "whsec_new_secret_two"], tolerance_seconds=300, now=NOW) == NOW


def test_a_header_with_several_v1_signatures_passes_when_one_matches():
    good = compute_signature(BODY, SECRET, NOW)
    header = f"t={NOW},v1={'0' * 64},v1={good},v0=ignored"
    assert verify(BODY, header, [SECRET], tolerance_seconds=300, now=NOW) == NOW


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing Stripe-Signature header"),
        ("", "missing Stripe-Signature header"),
        ("garbage", "malformed Stripe-Signature header"),
        (f"t={NOW}", "malformed Stripe-Signature header"),
        ("v1=abc", "malformed Stripe-Signature header"),
        (f"t=abc,v1={'0' * 64}", "malformed Stripe-Signature header"),
        (f"t={NOW},t={NOW},v1={'0' * 64}", "malformed Stripe-Signature header"),
        (f"t={NOW},v1={'0' * 64}", "no signature matches"),
    ],
)
def test_a_missing_malformed_or_wrong_signature_is_rejected_with_its_reason(header, reason):
    with pytest.raises(SignatureError, match=reason):
        verify(BODY, header, [SECRET], tolerance_seconds=300, now=NOW)


def test_a_tampered_body_fails_verification():
    header = sign(BODY, SECRET, NOW)
    with pytest.raises(SignatureError, match="no signature matches"):
        verify(b'{"id": "evt_2"}', header, [SECRET], tolerance_seconds=300, now=NOW)


@pytest.mark.parametrize("offset", [-301, 301])
def test_a_timestamp_more_than_five_minutes_old_or_ahead_is_rejected(offset):
    header = sign(BODY, SECRET, NOW + offset)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(BODY, header, [SECRET], tolerance_seconds=300, now=NOW)


@pytest.mark.parametrize("offset", [-300, 300])
def test_a_timestamp_exactly_at_the_tolerance_is_accepted(offset):
    header = sign(BODY, SECRET, NOW + offset)
    assert verify(BODY, header, [SECRET], tolerance_seconds=300, now=NOW) == NOW + offset


def test_verification_cannot_run_without_a_secret():
    with pytest.raises(SignatureError, match="no webhook secret"):
        verify(BODY, sign(BODY, SECRET, NOW), [], tolerance_seconds=300, now=NOW)


@pytest.mark.parametrize(
    "header", [f"t=\u00b2,v1={'0' * 64}", f"t={NOW},v1=\u00e9{'0' * 63}", f"t=\uff11\uff12,v1={'0' * 64}"]
)
def test_non_ascii_digits_or_signatures_are_a_malformed_header_not_a_crash(header):
    with pytest.raises(SignatureError):
        verify(BODY, header, [SECRET], tolerance_seconds=300, now=NOW)
