"""The HumanEval agent loop written the way most Python developers would write it.

The official openai SDK (AsyncOpenAI) on the stock asyncio event loop, a semaphore for the
concurrency, pytest in a plain subprocess, results as the benchmark's runner contract asks:
``results/raw/openai-sdk_<ts>.csv`` and ``..._summary.json`` in the working directory.

It is a yardstick for ``fastagent compare``: plain and honest, neither sabotaged nor tuned.
It follows the runner contract (../../../shared/reference/cpp-stack-README.md):

    LLM_BASE_URL   the OpenAI-compatible endpoint (required)
    LLM_MODEL      the model (default: the first one the endpoint lists)
    BENCH_DATASET  the tasks JSON (default dataset/humaneval_100.json)
    BENCH_CONCURRENCY  concurrent agents (default 100)

    pip install -r stacks/openai-sdk/requirements.txt
    LLM_BASE_URL=http://127.0.0.1:8000/v1 python stacks/openai-sdk/runner.py
"""

import asyncio
import csv
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from openai import AsyncOpenAI

MAX_RETRIES = 3
TEST_TIMEOUT = 30
SYSTEM_PROMPT = (
    "You are an expert Python developer. Write a correct implementation of the function "
    "described by the user. Answer with the complete code in a ```python code block."
)
CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(text):
    match = CODE_BLOCK.search(text)
    return match.group(1) if match else None


async def complete(client, model, messages):
    stream = await client.chat.completions.create(
        model=model, messages=messages, stream=True, temperature=0
    )
    parts = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


async def run_tests(code, test):
    workdir = tempfile.mkdtemp(prefix="openai-sdk-")
    try:
        Path(workdir, "solution.py").write_text(code)
        Path(workdir, "test_solution.py").write_text(test)
        proc = await asyncio.create_subprocess_exec(
            "python3", "-B", "-m", "pytest", "-q", "test_solution.py",
            cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), TEST_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return False, "Timed out."
        return proc.returncode == 0, output.decode(errors="replace")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def solve(client, model, task, semaphore):
    async with semaphore:
        start = time.time()
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": f"{task['spec']}\n\nThese tests must pass:\n\n{task['test']}",
            },
        ]
        attempts = 0
        try:
            for attempt in range(MAX_RETRIES + 1):
                attempts = attempt + 1
                reply = await complete(client, model, messages)
                code = extract_code(reply)
                if code is None:
                    output = "No code block found in your answer."
                else:
                    ok, output = await run_tests(code, task["test"])
                    if ok:
                        return result(task, "passed", attempts, start)
                messages.append({"role": "assistant", "content": reply})
                messages.append(
                    {"role": "user", "content": f"The tests failed:\n{output[-3000:]}\nFix it."}
                )
            return result(task, "failed", attempts, start)
        except Exception as exc:  # the endpoint failed: record it and go on
            return result(task, "error", attempts, start, str(exc))


def result(task, status, attempts, start, reason=""):
    return {
        "task_id": task["id"],
        "status": status,
        "attempts": attempts,
        "retries": max(0, attempts - 1),
        "first_attempt_pass": status == "passed" and attempts == 1,
        "wall_s": round(time.time() - start, 3),
        "reason": reason,
    }


async def main():
    base_url = os.environ["LLM_BASE_URL"]
    concurrency = int(os.environ.get("BENCH_CONCURRENCY", "100"))
    with open(os.environ.get("BENCH_DATASET", "dataset/humaneval_100.json")) as f:
        tasks = json.load(f)
    client = AsyncOpenAI(base_url=base_url, api_key=os.environ.get("LLM_API_KEY", "none"))
    model = os.environ.get("LLM_MODEL") or (await client.models.list()).data[0].id
    semaphore = asyncio.Semaphore(concurrency)
    started = time.time()
    results = await asyncio.gather(*(solve(client, model, t, semaphore) for t in tasks))
    wall = time.time() - started
    await client.close()

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path("results/raw")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"openai-sdk_{stamp}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    passed = sum(r["status"] == "passed" for r in results)
    first = sum(r["first_attempt_pass"] for r in results)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary = {
        "runtime": "python-openai-sdk",
        "model": model,
        "concurrency": concurrency,
        "total_tasks": len(results),
        "passed": passed,
        "pass_at_1": passed / len(results),
        "first_attempt_pass": first,
        "recovered": passed - first,
        "failed": sum(r["status"] == "failed" for r in results),
        "errors": sum(r["status"] == "error" for r in results),
        "avg_retries": sum(r["retries"] for r in results) / len(results),
        "wall_time_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is KiB on Linux
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
    }
    with open(out / f"openai-sdk_{stamp}_summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
