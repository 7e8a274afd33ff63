"""Training curves follow the columns of log.csv."""

from __future__ import annotations

from pathlib import Path

from mcgf.reporting.sections import column_groups, training_section


def test_columns_are_grouped_by_chart() -> None:
    names = ["step", "epoch", "lr", "ce", "restore", "total", "images_per_s", "grad_encoder_ce",
             "grad_encoder_restore", "val_R@1", "val_AP", "val_restore_psnr", "val_restore_ssim",
             "aux"]
    assert column_groups(names) == {
        "losses": ["total", "ce", "restore", "aux"],
        "gradients": ["grad_encoder_ce", "grad_encoder_restore"],
        "retrieval": ["val_R@1", "val_AP"],
        "psnr": ["val_restore_psnr"],
        "ssim": ["val_restore_ssim"],
    }


def test_gradient_and_restoration_curves_are_drawn(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(
        "step,epoch,lr,ce,restore,aux,total,images_per_s,grad_encoder_ce,grad_encoder_restore,"
        "val_restore_psnr,val_restore_ssim\n"
        "1,1,0.001,4.0,1.0,0.5,4.6,50,2.0,0.0,,\n"
        "2,1,0.001,3.0,0.9,0.4,3.5,50,1.5,0.3,12.5,0.41\n"
        "3,2,0.001,2.0,0.8,0.3,2.5,50,1.2,0.4,14.0,0.48\n")
    text = "".join(training_section(log))
    for title in ("training losses", "gradient norm reaching the encoder",
                  "validation restoration PSNR", "validation restoration SSIM"):
        assert title in text
    # 4 loss series (total, ce, restore, aux), 2 gradient series, PSNR, SSIM.
    assert text.count('class="curve"') == 8
    assert "no validation values" not in text and ">validation<" not in text
    log.write_text("step,epoch,lr,ce,total,images_per_s\n1,1,0.001,4.0,4.0,50\n2,1,0.001,3.0,3.0,50\n")
    text = "".join(training_section(log))
    assert text.count('class="curve"') == 2 and "no validation values" in text
