"""Generate text from a run directory: `python sample.py --checkpoint DIR --prompt "text"`.

The run directory is one written by train.py or by `python -m zoo.hf import`. Prompts
come from --prompt (text), --prompt-ids (comma-separated ids, no tokenizer needed) or
--prompt-file (a UTF-8 text file of prompts, one per line, generated as a batch); an
encoder-decoder model reads the prompt with its encoder and decodes from BOS. A text
prompt follows BOS, and generation stops at EOS: the config's model.bos_id and
model.eos_ids where set, else the tokenizer's; an empty prompt generates from BOS alone.
--step N reads checkpoint N of the run instead of the newest. A single prompt's
continuation is printed as it is generated; --json prints one object per prompt with
`tokens` (the new ids), `text` (when the run has a tokenizer) and `finish_reason`. The
speed of the generation goes to stderr, one line at the end. --quantize SCHEME holds the
linear weights quantized as the run loads (int8, w8a8, fp8, nf4: zoo/layers/quantized.py).

--chat renders the prompt as one user message with the run's chat template (a chat_template
in its tokenizer_config.json, as transformers' apply_chat_template does; zoo/chat.py) and
encodes that text as it is, adding no BOS the template does not write. --interactive reads
prompts from stdin, one a line, after a `> ` on stderr, and streams each answer until EOF,
with one Generator (its compiled programs) for every turn; with --chat the lines are a
conversation, the history kept while it fits the model's context (the oldest exchanges are
dropped, with a note on stderr, when it no longer does).
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

from zoo import chat, compile_cache, rundir, runs
from zoo.console import ArgumentParser, show_kernel_choices
from zoo.generate import MAX_SEED, Generator
from zoo.layers.quantized import SCHEMES
from zoo.quantize import quantized_run
from zoo.sampling import Sampler, SettingError

FLAGS = {"stop_strings": "--stop"}  # generation settings whose flag is not --NAME-WITH-DASHES
TOKENIZERS = f"{rundir.TOKENIZER} or {rundir.TOKENIZER_JSON}"  # the files a run's tokenizer can be
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"'}
ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.?)", re.DOTALL)


def unescape(text: str) -> str:
    """--stop's text with \\n, \\t, \\r, \\\\, \\", \\xhh and \\uXXXX read as the characters they name."""

    def character(match: re.Match) -> str:
        escape = match.group(1)
        if escape in ESCAPES:
            return ESCAPES[escape]
        if len(escape) > 1:
            return chr(int(escape[1:], 16))
        raise ValueError(
            f'--stop "{text}" holds "{match.group(0)}", which is not an escape: use \\n \\t \\r \\\\ \\" '
            "\\xhh (two hex digits) or \\uXXXX (four), and \\\\ for a backslash"
        )

    return ESCAPE.sub(character, text)


def parse_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--prompt-ids must be comma-separated integers, got {text!r}") from None


def read_lines(path: str) -> list[str]:
    """The non-blank lines of a UTF-8 text file."""
    try:
        with open(path, encoding="utf-8") as lines:
            texts = [line.rstrip("\n") for line in lines if line.strip()]
    except UnicodeDecodeError as error:
        raise ValueError(f"--prompt-file {path} is not UTF-8 text: {error.reason} at byte {error.start}") from None
    except OSError as error:
        raise ValueError(f"--prompt-file {path}: {error.strerror or error}") from None
    if not texts:
        raise ValueError(f"--prompt-file {path} holds no prompts")
    return texts


def special_ids(run: runs.Run) -> tuple[int | None, tuple[int, ...]]:
    """(BOS, EOS ids): the config's model.bos_id / model.eos_ids where set, else the tokenizer's."""
    model, tokenizer = run.config.model, run.tokenizer
    bos, eos_ids = model.bos_id, model.eos_ids
    if tokenizer is not None:  # sentencepiece says -1 for an id it does not have
        bos = tokenizer.bos_id if bos is None and tokenizer.bos_id >= 0 else bos
        eos_ids = eos_ids or tuple(i for i in (tokenizer.eos_id,) if i >= 0)
    return bos, eos_ids


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="sample.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="run directory (config, tokenizer, checkpoints)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", metavar="TEXT", help="prompt text")
    source.add_argument("--prompt-ids", metavar="IDS", help="prompt token ids, e.g. 1,2,3")
    source.add_argument("--prompt-file", metavar="FILE", help="a UTF-8 text file of prompts, one per line, generated as a batch")
    source.add_argument(
        "--interactive", action="store_true",
        help="read prompts from stdin, one a line (a '> ' prompt on stderr), and stream each answer, until EOF",
    )
    parser.add_argument(
        "--chat", action="store_true",
        help="render the prompt as a user message with the run's chat template (tokenizer_config.json); "
        "with --interactive, the whole conversation",
    )
    parser.add_argument("--step", type=int, metavar="N", help="use checkpoint N of the run (default: the newest usable one)")
    parser.add_argument("--max-new-tokens", type=int, default=100, metavar="N", help="at most N new tokens (>= 1)")
    parser.add_argument("--temperature", type=float, default=1.0, metavar="T", help="a finite number >= 0; 0 is greedy")
    parser.add_argument(
        "--top-k", type=int, metavar="K",
        help="keep the K likeliest tokens; 0 is off, and K at or above the vocabulary size keeps every token",
    )
    parser.add_argument("--top-p", type=float, metavar="P", help="keep the fewest likeliest tokens whose probability reaches P, in (0, 1]")
    parser.add_argument("--min-p", type=float, metavar="P", help="keep tokens at least P times as likely as the best, P in [0, 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, in [0, 2**32 - 1]")
    parser.add_argument(
        "--stop", action="append", default=[], metavar="TEXT",
        help='end a sequence just before this text (repeatable); \\n \\t \\r \\\\ \\" \\xhh \\uXXXX are read as escapes',
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    parser.add_argument(
        "--quantize", choices=tuple(SCHEMES), metavar="SCHEME",
        help=f"hold the linear weights quantized as the run loads ({', '.join(SCHEMES)}; python -m zoo.quantize saves such a run)",
    )
    return parser


class Stream:
    """on_text for a single prompt: prints its text as it becomes final."""

    used = False

    def __call__(self, pieces: list[str]) -> None:
        self.used = True
        sys.stdout.write(pieces[0])
        sys.stdout.flush()


class Clock:
    """on_tokens that times a generation from `begin()` (just before the prefill): `first` when
    every prompt's first new token is on the host (the prefill and one decode step, which also
    feeds that token back), `end` when the generation returns. The first generation in a process
    compiles the model's programs (the prefill, and the decode loop within its first step), and
    both times include that."""

    start = first = end = 0.0

    def begin(self) -> None:
        self.start = self.first = self.end = time.perf_counter()

    def __call__(self, counts: list[int]) -> None:
        if self.first == self.start:
            self.first = time.perf_counter()

    def stop(self) -> None:
        self.end = time.perf_counter()

    def report(self, tokens: int) -> str:
        """`N tokens in T s: R tokens/s, first token after F s (compile or cache load included)` for `tokens` new tokens."""
        elapsed, first = max(self.end - self.start, 1e-9), self.first - self.start
        return (
            f"{tokens} token{'' if tokens == 1 else 's'} in {elapsed:.2f} s: {tokens / elapsed:.1f} tokens/s, "
            f"first token after {first:.2f} s (compile or cache load included)"
        )


def load(args) -> runs.Run:
    """The run directory's run at --step (one line listing the steps there are when it has no such checkpoint)."""
    if args.step is not None:
        directory = rundir.check_path(args.checkpoint)
        steps = sorted(rundir.checkpoint_steps(directory))
        if args.step not in steps and (directory / runs.CONFIG).is_file():  # else runs.load says what it lacks
            there = f"it has step{'s' * (len(steps) > 1)} {', '.join(map(str, steps))}" if steps else "it has none"
            raise ValueError(f"--step {args.step}: {args.checkpoint} has no checkpoint at step {args.step}; {there}")
    run = runs.load(args.checkpoint, step=args.step)
    return run if args.quantize is None else quantized_run(run, args.quantize)


class Session:
    """A run loaded for generation with the settings of parsed arguments: its tokenizer, special
    ids, chat template (--chat) and one Generator, whose compiled programs every call reuses."""

    def __init__(self, args):
        self.args = args
        self.sampler = Sampler(args.temperature, args.top_k, args.top_p, args.min_p)
        self.stop_strings = [unescape(text) for text in args.stop]
        if args.chat and args.prompt_ids is not None:
            raise ValueError("--chat renders text with the run's chat template; give the prompt as --prompt, --prompt-file or --interactive")
        self.template = None
        if args.chat and Path(args.checkpoint).is_dir():  # before the checkpoint is read (else runs.load says what is wrong)
            self.template = chat.require(args.checkpoint)
        self.run = run = load(args)
        for note in run.notes:
            print(f"sample.py: warning: {note}", file=sys.stderr, flush=True)
        self.tokenizer = run.tokenizer
        self.bos, self.eos_ids = special_ids(run)
        if self.stop_strings and self.tokenizer is None:
            raise ValueError(f"--stop needs a tokenizer ({TOKENIZERS}) to read the generated text, and {args.checkpoint} has none")
        if args.prompt_ids is None and self.tokenizer is None:
            raise ValueError(f"{args.checkpoint} has no tokenizer ({TOKENIZERS}); give the prompt as --prompt-ids")
        if run.config.model.kind == "encoder_decoder" and self.bos is None:  # decoding starts at BOS
            raise ValueError(
                f"{args.checkpoint} names no decoder start token: set model.bos_id in its {runs.CONFIG} "
                f"or give it a tokenizer ({TOKENIZERS})"
            )
        self.generator = Generator(run.model, run.params)

    def encode(self, text: str) -> list[int]:
        """A text prompt's ids: BOS (where the run has one), then the text's."""
        return [*([] if self.bos is None else [self.bos]), *self.tokenizer.encode(text)]

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """The ids of `messages` rendered by the chat template, the assistant's turn opened. As in
        transformers' apply_chat_template, no special tokens are added: the template writes BOS
        where it wants one (a sentencepiece tokenizer, which reads "<s>" as text, gets its id)."""
        text = self.template.render(messages, add_generation_prompt=True)
        ids = self.tokenizer.encode(text)
        bos_text = self.template.special_tokens.get("bos_token")
        if self.bos is not None and bos_text and text.startswith(bos_text) and ids[:1] != [self.bos]:
            ids = [self.bos, *self.tokenizer.encode(text[len(bos_text):])]
        return ids

    def fits(self, prompt: list[int]) -> bool:
        """Whether the prompt and --max-new-tokens new tokens fit the model's context."""
        room = 0 if self.run.config.model.kind == "encoder_decoder" else self.args.max_new_tokens
        return len(prompt) + room <= self.run.config.model.max_seq_len

    def prompts(self) -> list[list[int]]:
        """The prompts of --prompt, --prompt-ids or --prompt-file (with --chat, each text one user message)."""
        args = self.args
        if args.prompt_ids is not None:
            return [parse_ids(args.prompt_ids)]
        texts = read_lines(args.prompt_file) if args.prompt_file is not None else [args.prompt]
        if self.template is not None:
            return [self.encode_chat([{"role": "user", "content": text}]) for text in texts]
        return [self.encode(text) for text in texts]

    def __call__(self, prompts, stream: Stream | None = None, clock: Clock | None = None, seed: int | None = None):
        """The Generated results for `prompts`; `stream` gets the text of a lone prompt as it comes,
        and `clock` is started just before the generation and told of its first tokens."""
        prompts = list(prompts)
        for index, prompt in enumerate(prompts):  # an empty prompt: unconditional generation from BOS
            if not prompt and self.bos is None:
                raise ValueError(
                    f"prompt {index} is empty; give at least one token, or set model.bos_id in its {runs.CONFIG} "
                    "to generate from BOS"
                )
            prompts[index] = prompt or [self.bos]
        encoder_prompts = None
        if self.run.config.model.kind == "encoder_decoder":  # the prompt is the encoder's input
            encoder_prompts, prompts = prompts, [[self.bos]] * len(prompts)
        if clock is not None:
            clock.begin()  # with the generation, not with loading the run
        results = self.generator(
            prompts,
            encoder_prompts=encoder_prompts,
            max_new_tokens=self.args.max_new_tokens,
            sampler=self.sampler,
            seed=self.args.seed if seed is None else seed,
            eos_ids=self.eos_ids,
            stop_strings=self.stop_strings,
            tokenizer=self.tokenizer,
            on_text=stream if len(prompts) == 1 and self.tokenizer is not None else None,
            on_tokens=clock,
        )
        if clock is not None:
            clock.stop()
        return results


def show(results, args, stream: Stream | None) -> None:
    """Prints the results: JSON records, a newline after streamed text, or the texts (ids without a tokenizer)."""
    for index, result in enumerate(results):
        if args.json:
            record = {"tokens": result.tokens, "finish_reason": result.finish_reason}
            if result.text is not None:
                record["text"] = result.text
            print(json.dumps(record))
        elif stream is not None and stream.used:
            print()  # the text itself went out as it came
        else:
            if len(results) > 1:
                print(f"--- prompt {index} ({result.finish_reason}) ---")
            print(result.text if result.text is not None else ",".join(map(str, result.tokens)))
    sys.stdout.flush()  # the speed line comes after the results where both go to a terminal


def converse(session: Session) -> None:
    """--interactive: a prompt per line of stdin (`> ` on stderr), each answer streamed, until EOF.
    With --chat each line is the user's next message and the conversation so far is the prompt;
    when it no longer fits the model's context its oldest exchanges are dropped, and said so.
    Turn N samples with --seed + N."""
    args, history, turn = session.args, [], 0
    context = session.run.config.model.max_seq_len
    while True:
        print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            print(file=sys.stderr, flush=True)
            return
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        if session.template is not None:
            messages = [*history, {"role": "user", "content": text}]
            prompt, dropped = session.encode_chat(messages), 0
            while not session.fits(prompt) and len(messages) > 2:
                messages, dropped = messages[2:], dropped + 1  # the oldest user message and its answer
                prompt = session.encode_chat(messages)
            if dropped:
                print(
                    f"sample.py: the conversation no longer fits the model's context of {context} tokens with "
                    f"--max-new-tokens {args.max_new_tokens}; dropped its oldest {dropped} exchange{'s' * (dropped > 1)}",
                    file=sys.stderr, flush=True,
                )
        else:
            messages, prompt = None, session.encode(text)
        if not session.fits(prompt):
            print(
                f"sample.py: this message is {len(prompt)} tokens, too long for the model's context of {context} "
                f"tokens with --max-new-tokens {args.max_new_tokens}; not sent",
                file=sys.stderr, flush=True,
            )
            continue
        stream, clock = (None if args.json else Stream()), Clock()
        [result] = session([prompt], stream, clock, seed=(args.seed + turn) % (MAX_SEED + 1))
        turn += 1
        show([result], args, stream)
        print(clock.report(len(result.tokens)), file=sys.stderr, flush=True)
        if messages is not None:
            history = [*messages, {"role": "assistant", "content": result.text}]


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    compile_cache.enable()
    stream = None if args.json or args.interactive else Stream()
    clock = Clock()
    with show_kernel_choices(sys.stderr):
        try:
            session = Session(args)
            if args.interactive:
                converse(session)
                return 0
            results = session(session.prompts(), stream, clock)
        except SettingError as error:
            parser.error(f"{FLAGS.get(error.name, '--' + error.name.replace('_', '-'))} {error.problem}")
        except (ValueError, OSError) as error:
            parser.error(str(error))
    show(results, args, stream)
    print(clock.report(sum(len(result.tokens) for result in results)), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
