"""transformers' Trainer with its bitsandbytes optimizers (TrainingArguments(optim=...)) on the 4-bit LoRA
model: the optimizer Trainer builds is bitsandbytes.optim's class as this layer serves it, its state is
8-bit, and the loss falls."""

import inspect
import os

import pytest
import torch

from conftest import DEVICE, IS_BNB, load

# optim name -> the bitsandbytes.optim class Trainer instantiates (with optim_bits=8, is_paged=...)
OPTIMS = {
    "paged_adamw_8bit": ("AdamW", 1e-2),
    "adamw_bnb_8bit": ("AdamW", 1e-2),
    "paged_lion_8bit": ("Lion", 2e-3),
    "rmsprop_bnb_8bit": ("RMSprop", 2e-3),
}
STEPS = 10


class _Rows(torch.utils.data.Dataset):
    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return 8

    def __getitem__(self, i):
        row = self.ids[i % len(self.ids)]
        return {"input_ids": row, "labels": row.clone(), "attention_mask": torch.ones_like(row)}


def _qlora():
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    m = load(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
             bnb_4bit_compute_dtype="float32")
    m = prepare_model_for_kbit_training(m)
    # r=64: every LoRA matrix has at least 4096 elements, bitsandbytes' min_8bit_size, so that the
    # optimizers keep 8-bit state for all of them
    return get_peft_model(m, LoraConfig(r=64, lora_alpha=64, lora_dropout=0.0, target_modules="all-linear",
                                        task_type="CAUSAL_LM"))


@pytest.mark.parametrize("optim", sorted(OPTIMS))
def test_trainer_with_bitsandbytes_optimizer(optim, ids, tmp_path):
    import bitsandbytes
    from transformers import Trainer, TrainingArguments

    cls_name, lr = OPTIMS[optim]
    args = TrainingArguments(output_dir=str(tmp_path), optim=optim, learning_rate=lr, max_steps=STEPS,
                             per_device_train_batch_size=2, logging_steps=1, save_strategy="no", report_to=[],
                             use_cpu=DEVICE == "cpu", disable_tqdm=True, lr_scheduler_type="constant", seed=0,
                             dataloader_num_workers=0)
    trainer = Trainer(model=_qlora(), args=args, train_dataset=_Rows(ids.cpu()))
    trainer.train()

    opt = trainer.optimizer
    opt = getattr(opt, "optimizer", opt)  # accelerate's wrapper
    cls = getattr(bitsandbytes.optim, cls_name)
    assert isinstance(opt, cls), type(opt)
    assert "bitsandbytes" in str(type(opt))  # what makes Trainer apply its embedding override
    if IS_BNB:  # served by this layer, not another bitsandbytes
        layer_dir = os.path.dirname(os.path.abspath(bitsandbytes.__file__))
        assert os.path.abspath(inspect.getfile(type(opt))).startswith(layer_dir)
    eight_bit = [t for st in opt.state.values() for t in st.values()
                 if isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.numel() >= 4096]
    assert eight_bit, f"{optim}: no 8-bit optimizer state"

    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == STEPS
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1, (optim, losses)
