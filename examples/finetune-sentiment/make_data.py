"""Writes train.jsonl and val.jsonl: short product reviews to be labelled
with exactly one word, `positive` or `negative`, as chat records.

The held-out split (val.jsonl) uses products and phrasings that never
appear in train.jsonl, so it measures whether the adapter learned the task
and the answer format, not the examples. Deterministic (seeded): run
`python3 make_data.py` in this folder to regenerate the same files.
"""
import json
import random

rng = random.Random(12)
train_items = ["blender", "backpack", "phone case", "desk lamp", "kettle", "keyboard",
               "tent", "jacket", "coffee grinder", "umbrella", "water bottle", "mouse",
               "headphones", "toaster", "chair", "notebook", "scarf", "bike lock"]
val_items = ["vacuum cleaner", "suitcase", "monitor", "rice cooker", "sneakers", "pillow"]
pos = ["works perfectly", "is excellent", "exceeded my expectations", "is sturdy and well made",
       "was a great purchase", "is a joy to use", "does exactly what it promises",
       "arrived quickly and works great", "is worth every penny", "made my mornings better"]
neg = ["broke after two days", "is a waste of money", "stopped working within a week",
       "feels cheap and flimsy", "was a terrible purchase", "is frustrating to use",
       "does not do what it promises", "arrived damaged", "is not worth the price",
       "made a horrible noise from day one"]
val_pos = ["is simply wonderful", "I would happily buy it again"]
val_neg = ["fell apart almost immediately", "I want a refund"]
openers = ["", "Honestly, ", "After a month, ", "I have to say ", "Update: "]
closers = ["", " Five stars.", " One star.", " Recommended.", " Avoid.", " Thanks."]


def review(item, phrase, label):
    closer = rng.choice([c for c in closers if not (
        (label == "positive" and c in (" One star.", " Avoid.")) or
        (label == "negative" and c in (" Five stars.", " Recommended.")))])
    if phrase.startswith("I "):
        text = f"{rng.choice(openers)}the {item}: {phrase}.{closer}"
    else:
        text = f"{rng.choice(openers)}the {item} {phrase}.{closer}"
    text = text[0].upper() + text[1:]
    return {"messages": [
        {"role": "user", "content": f"Review: {text}\nIs this review positive or negative? Answer with one word."},
        {"role": "assistant", "content": label},
    ]}


def make(items, pos_phrases, neg_phrases, n):
    out = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        phrase = rng.choice(pos_phrases if label == "positive" else neg_phrases)
        out.append(review(rng.choice(items), phrase, label))
    return out


train = make(train_items, pos, neg, 240)
val = make(val_items, pos[:5] + val_pos, neg[:5] + val_neg, 60)
for name, rows in [("train.jsonl", train), ("val.jsonl", val)]:
    with open(name, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
