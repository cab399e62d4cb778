"""Generate text from a run directory: `python sample.py --checkpoint DIR --prompt "text"`.

The run directory is one written by train.py or by `python -m zoo.hf import`. Prompts
come from --prompt (text), --prompt-ids (comma-separated ids, no tokenizer needed) or
--prompt-file (one text prompt per line, generated as a batch); an encoder-decoder model
reads the prompt with its encoder and decodes from BOS. A single prompt's
continuation is printed as it is generated; --json prints one object per prompt with
`tokens` (the new ids), `text` (when the run has a tokenizer) and `finish_reason`.
"""

import argparse
import json
import sys

from zoo import runs
from zoo.generate import Generator
from zoo.sampling import Sampler


class TextStream:
    """Prints one sequence's text as its tokens arrive, holding back incomplete characters."""

    def __init__(self, tokenizer, out=sys.stdout):
        self.tokenizer, self.out = tokenizer, out
        self.tokens: list[int] = []
        self.printed = 0

    def __call__(self, new_tokens: list[list[int]]) -> None:
        self.tokens += new_tokens[0]
        text = self.tokenizer.decode(self.tokens).rstrip("\ufffd")  # a partial UTF-8 character so far
        self.out.write(text[self.printed :])
        self.out.flush()
        self.printed = len(text)


def parse_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--prompt-ids must be comma-separated integers, got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="run directory (config, tokenizer, checkpoints)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="prompt text")
    source.add_argument("--prompt-ids", help="prompt token ids, e.g. 1,2,3")
    source.add_argument("--prompt-file", help="a file of text prompts, one per line, generated as a batch")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 is greedy")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--min-p", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop a sequence at this text")
    parser.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    args = parser.parse_args(argv)

    try:
        sampler = Sampler(args.temperature, args.top_k, args.top_p, args.min_p)
        run = runs.load(args.checkpoint)
        tokenizer = run.tokenizer
        if args.prompt_ids is not None:
            prompts = [parse_ids(args.prompt_ids)]
        else:
            if tokenizer is None:
                raise ValueError(f"{args.checkpoint} has no {runs.TOKENIZER}; give the prompt as --prompt-ids")
            if args.prompt_file is not None:
                with open(args.prompt_file, encoding="utf-8") as lines:
                    texts = [line.rstrip("\n") for line in lines if line.strip()]
                if not texts:
                    raise ValueError(f"{args.prompt_file} holds no prompts")
            else:
                texts = [args.prompt]
            prompts = [[tokenizer.bos_id, *tokenizer.encode(text)] if text else [] for text in texts]
        encoder_prompts = None
        if run.config.model.kind == "encoder_decoder":  # the prompt is the encoder's input; decoding starts at BOS
            encoder_prompts = prompts
            prompts = [[tokenizer.bos_id if tokenizer is not None else 1]] * len(prompts)
        generator = Generator(run.model, run.params)
        stream = TextStream(tokenizer) if tokenizer is not None and len(prompts) == 1 and not args.json else None
        results = generator(
            prompts,
            encoder_prompts=encoder_prompts,
            max_new_tokens=args.max_new_tokens,
            sampler=sampler,
            seed=args.seed,
            eos_id=tokenizer.eos_id if tokenizer is not None else None,
            stop_strings=args.stop,
            tokenizer=tokenizer,
            on_tokens=stream,
        )
    except (ValueError, runs.RunError, OSError) as error:
        parser.error(str(error))

    for index, result in enumerate(results):
        if args.json:
            record = {"tokens": result.tokens, "finish_reason": result.finish_reason}
            if result.text is not None:
                record["text"] = result.text
            print(json.dumps(record))
        elif stream is not None:
            print()
        else:
            if len(results) > 1:
                print(f"--- prompt {index} ({result.finish_reason}) ---")
            print(result.text if result.text is not None else ",".join(map(str, result.tokens)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
