

def test_top_k_and_repeat_penalty_are_checked_and_reach_gen_params():
    import pytest

    from core.config import Settings
    from core.errors import InvalidInputError

    params = Settings(top_k=0, repeat_penalty=1.2).gen_params()
    assert (params.top_k, params.repeat_penalty) == (0, 1.2)
    for bad in (Settings(top_k=-1), Settings(top_k=True), Settings(repeat_penalty=3.0)):
        with pytest.raises(InvalidInputError):
            bad.validate()
