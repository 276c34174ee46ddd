"""Debiasing baselines beside steering: the prompting prefix and scoring methods (`prompting`), Schick et al.'s
self-debiasing (`selfdebias`), the later paper's self-check (`selfcheck`), LoRA fine-tuning (`finetune`) and
their runs on each benchmark (`runs`)."""
