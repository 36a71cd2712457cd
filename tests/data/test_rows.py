import torch

from recbole_sae.data.rows import last_row_mask


def test_last_row_mask():
    users = torch.tensor([3, 3, 1, 1, 1, 7])
    assert last_row_mask(users).tolist() == [False, True, False, False, True, True]
    assert last_row_mask(torch.tensor([5])).tolist() == [True]
    assert last_row_mask(torch.zeros(0, dtype=torch.long)).tolist() == []
