"""Test helpers shared across test folders: SyncTalk_2D's paste of a face into its frame, written
once for the references that restate it."""
import cv2


def paste_face(frame, face, rect, crop=328, offset=4):
    """The face [S, S, 3] into the frame at `rect` (x1, y1, x2, y2), as the model spec's section 3
    pastes it: the rectangle's crop resized to `crop`, the face written at (offset, offset), the
    crop resized back, bicubic both ways. A new frame; `frame` is left as it was."""
    x1, y1, x2, y2 = rect
    s = face.shape[0]
    big = cv2.resize(frame[y1:y2, x1:x2], (crop, crop), interpolation=cv2.INTER_CUBIC)
    big[offset:offset + s, offset:offset + s] = face
    out = frame.copy()
    out[y1:y2, x1:x2] = cv2.resize(big, (x2 - x1, y2 - y1), interpolation=cv2.INTER_CUBIC)
    return out
