"""Pairwise LLM judging: prompt templates, a strict verdict parser, three backends, a robust runner.

    judge = build_judge(OmegaConf.load("conf/judge/openai.yaml"))
    report = run_judgments(judge, load_template("summarization_c"), comparisons, seed=0, cache_dir=...)
    rate, se, n, n_invalid = win_rate(report.primary)
"""
from pipelines.judge.backends import (
                                      Answer,
                                      Judge,
                                      JudgeRequest,
                                      LocalLMJudge,
                                      OpenAIJudge,
                                      OracleJudge,
                                      PermanentJudgeError,
                                      TransientJudgeError,
                                      build_judge,
                                      fetch_smollm2,
                                      fetch_wheel_model,
                                      run_options,
)
from pipelines.judge.prompt import (
                                      VERDICT_PREFIX,
                                      builtin_templates,
                                      check_template,
                                      load_template,
                                      parse_verdict,
                                      render,
                                      verdict_line,
)
from pipelines.judge.runner import (
                                      Comparison,
                                      JudgeReport,
                                      JudgeStopped,
                                      Judgment,
                                      cache_key,
                                      cache_path,
                                      display_swapped,
                                      run_judgments,
                                      win_rate,
)

__all__ = ["Answer", "Comparison", "Judge", "JudgeReport", "JudgeRequest", "JudgeStopped", "Judgment",
           "LocalLMJudge", "OpenAIJudge", "OracleJudge", "PermanentJudgeError", "TransientJudgeError",
           "VERDICT_PREFIX", "build_judge", "builtin_templates", "cache_key", "cache_path", "check_template",
           "display_swapped", "fetch_smollm2", "fetch_wheel_model", "load_template", "parse_verdict", "render",
           "run_judgments", "run_options", "verdict_line", "win_rate"]
